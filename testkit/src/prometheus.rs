//! Reading Prometheus text expositions: the shim's `/metrics` and the API server's own.

use std::collections::BTreeMap;

use crate::control_plane::ControlPlane;

/// Every sample of `family` as (labels, value). Histogram and summary series are matched by
/// their full name (e.g. `…_count`).
pub fn samples<'a>(text: &'a str, family: &str) -> Vec<(Vec<(&'a str, &'a str)>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            (name == family).then_some((parse_labels(rest), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// The sum of every sample of `family` whose labels include all of `labels` (name, value).
pub fn sum(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, family)
        .into_iter()
        .filter(|(have, _)| labels.iter().all(|want| have.contains(want)))
        .map(|(_, v)| v)
        .sum()
}

/// `a="1",b="2"` as pairs; label values here never hold `",`.
fn parse_labels(text: &str) -> Vec<(&str, &str)> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k, v.strip_suffix('"').unwrap_or(v)))
        })
        .collect()
}

/// Requests the API server has answered so far, by "VERB resource[/subresource]", every response
/// code; watches and the API server's own requests are left out.
pub fn api_requests_by_kind(cp: &ControlPlane) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = cp.run_kubectl(&["get", "--raw", "/metrics"])?;
    let mut out = BTreeMap::new();
    for (labels, v) in samples(&text, "apiserver_request_total") {
        let label = |name: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == name)
                .map_or("", |(_, v)| *v)
        };
        if matches!(label("verb"), "WATCH" | "CONNECT") || label("resource").is_empty() {
            continue;
        }
        let mut kind = format!("{} {}", label("verb"), label("resource"));
        if !label("subresource").is_empty() {
            kind = format!("{kind}/{}", label("subresource"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        {
            *out.entry(kind).or_default() += v as u64;
        }
    }
    Ok(out)
}

/// Requests of one kind ("VERB resource[/subresource]", as [`api_requests_by_kind`] names them)
/// the API server has answered so far. It counts what a resourceVersion cannot show: patches
/// that changed nothing.
pub fn api_requests(cp: &ControlPlane, kind: &str) -> anyhow::Result<u64> {
    Ok(api_requests_by_kind(cp)?.get(kind).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::sum;

    #[test]
    fn sums_the_series_whose_labels_match() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",resource="pods",subresource="status",verb="PATCH"} 5
apiserver_request_total{code="409",resource="pods",subresource="status",verb="PATCH"} 2
apiserver_request_total{code="200",resource="pods",subresource="",verb="PATCH"} 7
apiserver_request_total{code="200",resource="nodes",subresource="pods",verb="PATCH"} 11
vk_reconcile_duration_seconds_count{outcome="ok"} 3
vk_reconcile_duration_seconds_count{outcome="error"} 1
"#;
        let status = [
            ("verb", "PATCH"),
            ("resource", "pods"),
            ("subresource", "status"),
        ];
        assert_eq!(sum(text, "apiserver_request_total", &status), 7.0);
        let plain = [("resource", "pods"), ("subresource", "")];
        assert_eq!(sum(text, "apiserver_request_total", &plain), 7.0);
        assert_eq!(sum(text, "vk_reconcile_duration_seconds_count", &[]), 4.0);
        assert_eq!(sum(text, "vk_reconcile_duration_seconds", &[]), 0.0);
    }
}
