//! The Azure AD side (client secret, federated assertion, IMDS) and ARM's bearer-token checks.

mod common;

use common::{API, Emu};
use vk_testkit::aci_emulator::{AciEmulatorOptions, CLIENT_ID, FEDERATED_TOKEN};

const SCOPE: &str = "https%3A%2F%2Fmanagement.azure.com%2F.default";
const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

fn list_path() -> String {
    format!("{}?{API}", Emu::groups_path())
}

#[tokio::test]
async fn client_credentials_with_secret_or_federated_assertion() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    // Emu::start already got a token with the client secret.
    assert_eq!(emu.arm("GET", &list_path(), None).await?.status, 200);

    let wrong = emu
        .token_request(&format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=nope&scope={SCOPE}"
        ))
        .await?;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert_eq!(wrong.body["error"], "invalid_client");
    assert!(
        wrong.body["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS7000215:"))
    );
    assert_eq!(wrong.body["error_codes"][0], 7000215);

    let fed = emu
        .token_request(&format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_assertion_type={JWT_BEARER}\
             &client_assertion={FEDERATED_TOKEN}&scope={SCOPE}"
        ))
        .await?;
    assert_eq!(fed.status, 200, "{}", fed.text);
    assert_eq!(fed.body["token_type"], "Bearer");
    assert_eq!(fed.body["expires_in"], 3600);
    let token = fed.body["access_token"].as_str().unwrap_or_default();
    let r = emu
        .raw(
            "GET",
            &list_path(),
            &[("authorization", &format!("Bearer {token}"))],
            String::new(),
        )
        .await?;
    assert_eq!(r.status, 200);

    let bad_fed = emu
        .token_request(&format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_assertion_type={JWT_BEARER}\
             &client_assertion=forged&scope={SCOPE}"
        ))
        .await?;
    assert_eq!(bad_fed.status, 401);
    assert!(
        bad_fed.body["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS70021:"))
    );

    let bad_scope = emu
        .token_request(&format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=vk-client-secret\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        ))
        .await?;
    assert_eq!(bad_scope.status, 400);
    assert_eq!(bad_scope.body["error"], "invalid_scope");

    let unknown_client = emu
        .token_request(&format!(
            "grant_type=client_credentials&client_id=someone&client_secret=x&scope={SCOPE}"
        ))
        .await?;
    assert_eq!(unknown_client.status, 400);
    assert!(
        unknown_client.body["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS700016:"))
    );
    // Neither secret nor assertion reaches the log.
    assert!(!emu.log().contains("vk-client-secret") && !emu.log().contains(FEDERATED_TOKEN));
    assert!(!emu.log().contains(&emu.token));
    emu.emu.stop().await
}

#[tokio::test]
async fn imds_managed_identity_requires_the_metadata_header() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions::default()).await?;
    let path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
    let without = emu.raw("GET", path, &[], String::new()).await?;
    assert_eq!(without.status, 400);
    assert_eq!(without.body["error"], "invalid_request");
    let with = emu
        .raw("GET", path, &[("Metadata", "true")], String::new())
        .await?;
    assert_eq!(with.status, 200, "{}", with.text);
    assert_eq!(with.body["expires_in"], "3600", "IMDS numbers are strings");
    assert!(
        with.body["expires_on"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok())
    );
    assert_eq!(with.body["resource"], "https://management.azure.com/");
    assert_eq!(with.body["token_type"], "Bearer");
    let token = with.body["access_token"].as_str().unwrap_or_default();
    let r = emu
        .raw(
            "GET",
            &list_path(),
            &[("authorization", &format!("Bearer {token}"))],
            String::new(),
        )
        .await?;
    assert_eq!(r.status, 200);
    emu.emu.stop().await
}

#[tokio::test]
async fn arm_rejects_missing_invalid_and_expired_tokens() -> anyhow::Result<()> {
    let emu = Emu::start(AciEmulatorOptions {
        token_lifetime_secs: 1,
        ..Default::default()
    })
    .await?;
    let missing = emu.raw("GET", &list_path(), &[], String::new()).await?;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"]["code"], "AuthenticationFailed");
    let challenge = missing
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer authorization_uri="),
        "{challenge}"
    );

    let invalid = emu
        .raw(
            "GET",
            &list_path(),
            &[("authorization", "Bearer made-up")],
            String::new(),
        )
        .await?;
    assert_eq!(invalid.status, 401);
    assert_eq!(invalid.body["error"]["code"], "InvalidAuthenticationToken");

    assert_eq!(
        emu.arm("GET", &list_path(), None).await?.status,
        200,
        "fresh token works"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let expired = emu.arm("GET", &list_path(), None).await?;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.body["error"]["code"], "ExpiredAuthenticationToken");
    assert!(expired.headers.contains_key("www-authenticate"));

    let s = emu.emu.stats().await?;
    assert_eq!(s.auth_failures, 3);
    assert_eq!(s.requests, 4);
    emu.emu.stop().await
}
