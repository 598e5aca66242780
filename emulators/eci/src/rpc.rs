//! RPC request parameters: the flat `name=value` map (query string plus form body) and its
//! documented flattening of lists and objects (`Container.1.EnvironmentVar.2.Key`).

use std::collections::BTreeMap;

use crate::errors::ApiError;

/// All parameters of one request, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    /// Decodes `application/x-www-form-urlencoded` pairs (query string or body) into `self`.
    pub fn extend_from_urlencoded(&mut self, raw: &[u8]) {
        for (k, v) in form_urlencoded::parse(raw) {
            self.0.insert(k.into_owned(), v.into_owned());
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A non-empty value, or `Missing{name}`.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(name)),
        }
    }

    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.non_empty(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ApiError::invalid(name)),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.non_empty(name)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(name)))
            .transpose()
    }

    pub fn float(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.non_empty(name)
            .map(|v| match v.parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
                _ => Err(ApiError::invalid(name)),
            })
            .transpose()
    }

    /// The indices `N` present under `prefix.N` or `prefix.N.*`, ascending.
    pub fn indices(&self, prefix: &str) -> Vec<u32> {
        let dotted = format!("{prefix}.");
        let mut found: Vec<u32> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(&dotted))
            .filter_map(|rest| rest.split('.').next())
            .filter_map(|n| n.parse::<u32>().ok())
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// The values of a repeat list `prefix.1`, `prefix.2`, ... in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.indices(prefix)
            .into_iter()
            .filter_map(|n| self.get(&format!("{prefix}.{n}")).map(str::to_owned))
            .collect()
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs, with the documented limits: at most 20 tags, keys of
    /// at most 64 characters not starting with `aliyun` or `acs:`, values of at most 128 not
    /// starting with `acs:`, neither containing `http://` or `https://`.
    pub fn tags(&self) -> Result<Vec<(String, String)>, ApiError> {
        let indices = self.indices("Tag");
        if indices.len() > 20 {
            return Err(ApiError::invalid("Tag"));
        }
        let url = |s: &str| s.contains("http://") || s.contains("https://");
        indices
            .into_iter()
            .map(|n| {
                let key_name = format!("Tag.{n}.Key");
                let key = self.required(&key_name)?.to_owned();
                if key.chars().count() > 64
                    || key.starts_with("aliyun")
                    || key.starts_with("acs:")
                    || url(&key)
                {
                    return Err(ApiError::invalid(&key_name));
                }
                let value_name = format!("Tag.{n}.Value");
                let value = self.get(&value_name).unwrap_or("").to_owned();
                if value.chars().count() > 128 || value.starts_with("acs:") || url(&value) {
                    return Err(ApiError::invalid(&value_name));
                }
                Ok((key, value))
            })
            .collect()
    }

    /// A JSON array of strings (e.g. `ContainerGroupIds`, `Command`).
    pub fn json_strings(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        self.non_empty(name)
            .map(|v| serde_json::from_str::<Vec<String>>(v).map_err(|_| ApiError::invalid(name)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_lists_come_back_in_index_order() {
        let mut p = Params::default();
        p.extend_from_urlencoded(
            b"Container.10.Name=j&Container.2.Name=b&Container.2.Arg.2=y&Container.2.Arg.1=x&Tag.1.Key=k&Tag.1.Value=v%20w",
        );
        assert_eq!(p.indices("Container"), vec![2, 10]);
        assert_eq!(p.list("Container.2.Arg"), vec!["x", "y"]);
        assert_eq!(
            p.tags().ok(),
            Some(vec![("k".to_owned(), "v w".to_owned())])
        );
    }

    #[test]
    fn missing_and_invalid_values_use_documented_codes() {
        let mut p = Params::default();
        p.extend_from_urlencoded(b"Limit=abc");
        assert_eq!(
            p.required("RegionId").err().map(|e| e.code),
            Some("MissingRegionId".into())
        );
        assert_eq!(
            p.int("Limit").err().map(|e| e.code),
            Some("InvalidParameter".into())
        );
    }
}
