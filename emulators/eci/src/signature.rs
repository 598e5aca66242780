//! Signature method V3 (`ACS3-HMAC-SHA256`), as Alibaba Cloud's "Request syntax and signature
//! method V3" describes it:
//!
//! ```text
//! CanonicalRequest = Method \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n
//!                    SignedHeaders \n HexEncode(SHA256(body))
//! StringToSign     = "ACS3-HMAC-SHA256" \n HexEncode(SHA256(CanonicalRequest))
//! Signature        = HexEncode(HMAC-SHA256(AccessKeySecret, StringToSign))
//! ```
//!
//! Percent-encoding is RFC 3986: only `A-Z a-z 0-9 - _ . ~` stay as they are (so space is `%20`,
//! `*` is `%2A`, `~` stays). The same functions sign (for tests and clients) and verify.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm V3 defines.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// RFC 3986 percent-encoding of one name or value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sorted, encoded `name=value` pairs joined with `&` (empty values keep their `=`).
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `name:trimmed-value\n` per header (names lower-cased and sorted) and the `;`-joined names.
pub fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    sorted.sort();
    let canonical = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = sorted
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (canonical, signed)
}

/// The canonical request (RPC style: the canonical URI is always `/`).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    hashed_payload: &str,
) -> String {
    format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{hashed_payload}",
        method.to_ascii_uppercase()
    )
}

/// `ACS3-HMAC-SHA256\n<hex sha256 of the canonical request>`.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Hex HMAC-SHA256 of the string to sign with the AccessKey secret.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    let mut m = mac(secret);
    m.update(string_to_sign.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Constant-time check of a hex signature.
pub fn signature_matches(secret: &str, string_to_sign: &str, provided_hex: &str) -> bool {
    let Ok(provided) = hex::decode(provided_hex) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(string_to_sign.as_bytes());
    m.verify_slice(&provided).is_ok()
}

/// The parts of an `Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses the Authorization header; `None` if it is not a well-formed V3 value.
pub fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.trim().strip_prefix(ALGORITHM)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for part in rest.trim().split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v.to_owned()),
            "SignedHeaders" => signed = Some(v.to_owned()),
            "Signature" => sig = Some(v.to_owned()),
            _ => return None,
        }
    }
    let (access_key_id, signed, signature) = (credential?, signed?, sig?);
    if access_key_id.is_empty() || signed.is_empty() || signature.is_empty() {
        return None;
    }
    Some(Authorization {
        access_key_id,
        signed_headers: signed.split(';').map(|h| h.to_ascii_lowercase()).collect(),
        signature,
    })
}

/// What a client signs: everything but the credentials.
#[derive(Debug, Clone)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
    /// `Some("application/x-www-form-urlencoded")` when the body carries parameters.
    pub content_type: Option<&'a str>,
    pub action: &'a str,
    pub version: &'a str,
    /// `yyyy-MM-ddTHH:mm:ssZ` (UTC).
    pub date: &'a str,
    pub nonce: &'a str,
    pub security_token: Option<&'a str>,
}

/// Client-side signing: all headers to send, `Authorization` included.
pub fn sign_request(
    req: &RequestToSign<'_>,
    access_key_id: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let hashed = sha256_hex(req.body);
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), req.host.into()),
        ("x-acs-action".into(), req.action.into()),
        ("x-acs-content-sha256".into(), hashed.clone()),
        ("x-acs-date".into(), req.date.into()),
        ("x-acs-signature-nonce".into(), req.nonce.into()),
        ("x-acs-version".into(), req.version.into()),
    ];
    if let Some(ct) = req.content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    if let Some(token) = req.security_token {
        headers.push(("x-acs-security-token".into(), token.into()));
    }
    let (canonical, signed) = canonical_headers(&headers);
    let request = canonical_request(
        req.method,
        "/",
        &canonical_query(req.query),
        &canonical,
        &signed,
        &hashed,
    );
    let sig = signature(secret, &string_to_sign(&request));
    headers.push((
        "authorization".into(),
        format!("{ALGORITHM} Credential={access_key_id},SignedHeaders={signed},Signature={sig}"),
    ));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed values of the documentation's "Signature examples" section.
    fn doc_headers() -> Vec<(String, String)> {
        [
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            (
                "x-acs-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-version", "2014-05-26"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn doc_query() -> Vec<(String, String)> {
        vec![
            (
                "ImageId".into(),
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd".into(),
            ),
            ("RegionId".into(), "cn-shanghai".into()),
        ]
    }

    #[test]
    fn reproduces_the_documented_v3_example_exactly() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let query = canonical_query(&doc_query());
        assert_eq!(
            query,
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai"
        );
        let (headers, signed) = canonical_headers(&doc_headers());
        assert_eq!(
            signed,
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
        );
        let request = canonical_request("POST", "/", &query, &headers, &signed, &sha256_hex(b""));
        let documented = "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
x-acs-version:2014-05-26\n\n\
host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(request, documented);
        let sts = string_to_sign(&request);
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        let sig = signature("YourAccessKeySecret", &sts);
        assert_eq!(
            sig,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert!(signature_matches("YourAccessKeySecret", &sts, &sig));
        assert!(!signature_matches("WrongSecret", &sts, &sig));
    }

    #[test]
    fn client_signer_produces_the_documented_authorization() {
        let query = doc_query();
        let req = RequestToSign {
            method: "POST",
            host: "ecs.cn-shanghai.aliyuncs.com",
            query: &query,
            body: b"",
            content_type: None,
            action: "RunInstances",
            version: "2014-05-26",
            date: "2023-10-26T10:22:32Z",
            nonce: "3156853299f313e23d1673dc12e1703d",
            security_token: None,
        };
        let headers = sign_request(&req, "YourAccessKeyId", "YourAccessKeySecret");
        let auth = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            auth,
            Some(
                "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;\
x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
            )
        );
    }

    #[test]
    fn percent_encoding_follows_rfc3986() {
        assert_eq!(percent_encode("a b*c~d/é"), "a%20b%2Ac~d%2F%C3%A9");
        assert_eq!(percent_encode("[\"x\"]"), "%5B%22x%22%5D");
    }

    #[test]
    fn parses_authorization_and_rejects_garbage() {
        let a = parse_authorization(
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host;x-acs-date,Signature=ab",
        )
        .expect("well-formed");
        assert_eq!(a.access_key_id, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-acs-date"]);
        assert!(parse_authorization("ACS3-HMAC-SHA256 Credential=AK").is_none());
        assert!(parse_authorization("acs AK:sig").is_none());
    }
}
