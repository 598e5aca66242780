//! RPC-style parameter flattening: a request described as JSON becomes the flat `Name.N.Field`
//! parameters the RPC API takes (`Container.1.EnvironmentVar.1.Key`, `Tag.2.Value`, …): objects
//! join their keys with `.`, arrays number their items from 1, scalars become strings.

use std::collections::BTreeMap;

use serde_json::Value;

/// Flattens `request` (a JSON object) into RPC parameters. Nulls and empty arrays are left out.
pub fn flatten(request: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk("", request, &mut out);
    out
}

/// Bytes `params` take in a query string (names and values percent-encoded, `=` and `&`), and
/// the parameter groups (`Container.1.EnvironmentVar`, `Volume.2.ConfigFileVolume`: the first
/// three parts of a name) that take the most, largest first.
pub fn query_size(params: &BTreeMap<String, String>) -> (usize, Vec<(String, usize)>) {
    let mut total = 0usize;
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (k, v) in params {
        let n =
            crate::signing::percent_encode(k).len() + crate::signing::percent_encode(v).len() + 2;
        total = total.saturating_add(n);
        let group = k.splitn(4, '.').take(3).collect::<Vec<_>>().join(".");
        *groups.entry(group).or_default() += n;
    }
    let mut largest: Vec<(String, usize)> = groups.into_iter().collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (total, largest)
}

fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                walk(&key(k), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(&key(&(i + 1).to_string()), v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        Value::Bool(b) => {
            out.insert(prefix.to_owned(), b.to_string());
        }
        Value::Number(n) => {
            out.insert(prefix.to_owned(), n.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_lists_and_objects_flatten_to_numbered_names() {
        let p = flatten(&json!({
            "RegionId": "cn-hangzhou",
            "Container": [
                {"Name": "web", "EnvironmentVar": [{"Key": "A", "Value": "1"}, {"Key": "B", "Value": "2"}],
                 "Command": ["sh", "-c"], "Cpu": 0.5, "Stdin": false,
                 "LivenessProbe": {"HttpGet": {"Port": 80}}},
                {"Name": "side", "Port": []}
            ],
            "Tag": [{"Key": "k", "Value": "v"}],
            "EipInstanceId": null
        }));
        let want: BTreeMap<String, String> = [
            ("RegionId", "cn-hangzhou"),
            ("Container.1.Name", "web"),
            ("Container.1.EnvironmentVar.1.Key", "A"),
            ("Container.1.EnvironmentVar.1.Value", "1"),
            ("Container.1.EnvironmentVar.2.Key", "B"),
            ("Container.1.EnvironmentVar.2.Value", "2"),
            ("Container.1.Command.1", "sh"),
            ("Container.1.Command.2", "-c"),
            ("Container.1.Cpu", "0.5"),
            ("Container.1.Stdin", "false"),
            ("Container.1.LivenessProbe.HttpGet.Port", "80"),
            ("Container.2.Name", "side"),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(p, want);
    }

    #[test]
    fn more_than_nine_items_keep_their_numbers() {
        let items: Vec<_> = (0..12).map(|i| json!({"Key": format!("k{i}")})).collect();
        let p = flatten(&json!({ "Tag": items }));
        assert_eq!(p["Tag.10.Key"], "k9");
        assert_eq!(p["Tag.12.Key"], "k11");
        assert_eq!(p.len(), 12);
    }
}
