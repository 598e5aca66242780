//! Request signing with ACS3-HMAC-SHA256 (Alibaba Cloud "Request syntax and signature method V3"),
//! the only signature method this provider speaks.
//!
//! CanonicalRequest = method \n canonical URI \n canonical query \n canonical headers \n signed
//! headers \n hex(sha256(body)); StringToSign = "ACS3-HMAC-SHA256" \n hex(sha256(CanonicalRequest));
//! Signature = hex(HMAC-SHA256(AccessKeySecret, StringToSign)). Headers signed: `host`,
//! `content-type` and every `x-acs-*` header.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The signature algorithm name, as sent in `Authorization`.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// An AccessKey pair, optionally with an STS security token. `Debug` shows the key id only.
#[derive(Clone)]
pub struct Credentials {
    /// AccessKey ID (not secret; it names the key).
    pub access_key_id: String,
    /// AccessKey secret. Never logged.
    pub access_key_secret: String,
    /// STS security token (temporary credentials), sent as `x-acs-security-token`. Never logged.
    pub security_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// RFC 3986 encoding as the V3 method requires: only `A-Z a-z 0-9 - _ . ~` stay as they are
/// (so space is `%20`, `*` is `%2A`, `~` is not encoded).
pub fn percent_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// hex(SHA-256(data)).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The canonical query string: parameters sorted by (encoded) name, names and values encoded,
/// joined with `&`.
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Headers that take part in the signature: `host`, `content-type` and `x-acs-*`, names lower-cased,
/// values trimmed, sorted by name.
fn signed(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(k, _)| k == "host" || k == "content-type" || k.starts_with("x-acs-"))
        .collect()
}

/// The `SignedHeaders` list: signed header names joined with `;`.
pub fn signed_headers(headers: &BTreeMap<String, String>) -> String {
    signed(headers)
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(";")
}

/// The canonical request.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &BTreeMap<String, String>,
    hashed_payload: &str,
) -> String {
    let canonical_headers: String = signed(headers)
        .iter()
        .map(|(k, v)| format!("{k}:{v}\n"))
        .collect();
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{hashed_payload}",
        signed_headers(headers)
    )
}

/// The string to sign for a canonical request.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The hex signature of `string_to_sign` with `secret`.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    hex(&hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()))
}

/// An RPC-style request to sign: parameters in the query string, body empty.
#[derive(Debug)]
pub struct RpcRequest<'a> {
    /// HTTP method (RPC APIs accept GET and POST).
    pub method: &'a str,
    /// `host` header value (host and port as sent).
    pub host: &'a str,
    /// The API operation, e.g. `CreateContainerGroup`.
    pub action: &'a str,
    /// The API version, e.g. `2018-08-08`.
    pub version: &'a str,
    /// Query parameters (already flattened).
    pub query: &'a BTreeMap<String, String>,
    /// `x-acs-date`, ISO 8601 UTC, e.g. `2023-10-26T10:22:32Z`.
    pub date: &'a str,
    /// `x-acs-signature-nonce`, unique per request.
    pub nonce: &'a str,
}

/// The headers to send (including `Authorization`) and the canonical query string to use as the
/// URL's query, for `req` signed with `creds`.
pub fn sign(creds: &Credentials, req: &RpcRequest<'_>) -> (BTreeMap<String, String>, String) {
    let payload_hash = sha256_hex(b"");
    let mut headers = BTreeMap::from([
        ("host".to_owned(), req.host.to_owned()),
        ("x-acs-action".to_owned(), req.action.to_owned()),
        ("x-acs-version".to_owned(), req.version.to_owned()),
        ("x-acs-date".to_owned(), req.date.to_owned()),
        ("x-acs-signature-nonce".to_owned(), req.nonce.to_owned()),
        ("x-acs-content-sha256".to_owned(), payload_hash.clone()),
    ]);
    if let Some(token) = &creds.security_token {
        headers.insert("x-acs-security-token".to_owned(), token.clone());
    }
    let query = canonical_query(req.query);
    let canonical = canonical_request(req.method, "/", &query, &headers, &payload_hash);
    let sig = signature(&creds.access_key_secret, &string_to_sign(&canonical));
    let auth = format!(
        "{ALGORITHM} Credential={},SignedHeaders={},Signature={sig}",
        creds.access_key_id,
        signed_headers(&headers)
    );
    headers.insert("authorization".to_owned(), auth);
    (headers, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of "Request syntax and signature method V3" (help.aliyun.com/zh/sdk/
    /// product-overview/v3-request-structure-and-signature): RunInstances, ECS 2014-05-26,
    /// AccessKey `YourAccessKeyId` / `YourAccessKeySecret`.
    fn documented() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let query = BTreeMap::from([
            (
                "ImageId".to_owned(),
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd".to_owned(),
            ),
            ("RegionId".to_owned(), "cn-shanghai".to_owned()),
        ]);
        let headers = BTreeMap::from([
            ("host".to_owned(), "ecs.cn-shanghai.aliyuncs.com".to_owned()),
            ("x-acs-action".to_owned(), "RunInstances".to_owned()),
            (
                "x-acs-content-sha256".to_owned(),
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            ),
            ("x-acs-date".to_owned(), "2023-10-26T10:22:32Z".to_owned()),
            (
                "x-acs-signature-nonce".to_owned(),
                "3156853299f313e23d1673dc12e1703d".to_owned(),
            ),
            ("x-acs-version".to_owned(), "2014-05-26".to_owned()),
        ]);
        (query, headers)
    }

    #[test]
    fn documented_example_canonical_request_string_to_sign_and_signature() {
        let (query, headers) = documented();
        let cq = canonical_query(&query);
        assert_eq!(
            cq,
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai"
        );
        assert_eq!(sha256_hex(b""), headers["x-acs-content-sha256"]);
        let canonical = canonical_request("POST", "/", &cq, &headers, &sha256_hex(b""));
        assert_eq!(
            canonical,
            "POST\n/\n\
             ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
             host:ecs.cn-shanghai.aliyuncs.com\n\
             x-acs-action:RunInstances\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2023-10-26T10:22:32Z\n\
             x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
             x-acs-version:2014-05-26\n\
             \n\
             host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let sts = string_to_sign(&canonical);
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            signature("YourAccessKeySecret", &sts),
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn sign_produces_the_documented_authorization_header() {
        let (query, _) = documented();
        let creds = Credentials {
            access_key_id: "YourAccessKeyId".into(),
            access_key_secret: "YourAccessKeySecret".into(),
            security_token: None,
        };
        let (headers, q) = sign(
            &creds,
            &RpcRequest {
                method: "POST",
                host: "ecs.cn-shanghai.aliyuncs.com",
                action: "RunInstances",
                version: "2014-05-26",
                query: &query,
                date: "2023-10-26T10:22:32Z",
                nonce: "3156853299f313e23d1673dc12e1703d",
            },
        );
        assert_eq!(
            headers["authorization"],
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert!(q.starts_with("ImageId="));
    }

    #[test]
    fn sts_token_is_signed_and_secrets_are_not_debug_printed() {
        let (query, _) = documented();
        let creds = Credentials {
            access_key_id: "id".into(),
            access_key_secret: "the-secret".into(),
            security_token: Some("the-token".into()),
        };
        let req = RpcRequest {
            method: "POST",
            host: "h",
            action: "A",
            version: "V",
            query: &query,
            date: "2023-10-26T10:22:32Z",
            nonce: "n",
        };
        let (headers, _) = sign(&creds, &req);
        assert_eq!(headers["x-acs-security-token"], "the-token");
        assert!(headers["authorization"].contains(";x-acs-security-token;"));
        let dbg = format!("{creds:?}");
        assert!(
            !dbg.contains("the-secret") && !dbg.contains("the-token"),
            "{dbg}"
        );
        // A different token changes the signature.
        let other = Credentials {
            security_token: Some("other".into()),
            ..creds
        };
        assert_ne!(
            sign(&other, &req).0["authorization"],
            headers["authorization"]
        );
    }

    #[test]
    fn encoding_follows_rfc3986() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("a b*c+d/e=f&"), "a%20b%2Ac%2Bd%2Fe%3Df%26");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
