//! Registry credentials from image pull Secrets, in both Docker config formats.

use std::collections::BTreeMap;

use podprovider_proto::v1 as pb;

/// Registry credentials from a `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`) or
/// `kubernetes.io/dockercfg` (`.dockercfg`) Secret's data; entries without usable credentials are
/// skipped. Malformed JSON yields nothing (the pull may still work for public images).
pub fn registry_credentials_from(data: &BTreeMap<String, Vec<u8>>) -> Vec<pb::RegistryCredential> {
    use base64::Engine;
    let auths = if let Some(raw) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<serde_json::Value>(raw)
            .ok()
            .and_then(|v| v.get("auths").cloned())
    } else if let Some(raw) = data.get(".dockercfg") {
        serde_json::from_slice::<serde_json::Value>(raw).ok()
    } else {
        None
    };
    let Some(serde_json::Value::Object(auths)) = auths else {
        return Vec::new();
    };
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    auths
        .iter()
        .filter_map(|(server, entry)| {
            let (mut username, mut password) = (field(entry, "username"), field(entry, "password"));
            if username.is_empty() {
                // `auth` is base64("user:password").
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(field(entry, "auth"))
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                let (u, p) = text.split_once(':')?;
                (username, password) = (u.to_owned(), p.to_owned());
            }
            let identity_token = field(entry, "identitytoken");
            (!username.is_empty() || !identity_token.is_empty()).then(|| pb::RegistryCredential {
                server: server.clone(),
                username,
                password,
                identity_token,
            })
        })
        .collect()
}
