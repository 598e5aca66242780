//! Service-account tokens for projected volumes, through the TokenRequest API as the kubelet
//! gets them, and when they must be refreshed.

use std::time::SystemTime;

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{self as k8s, ServiceAccount},
};
use kube::{Api, api::PostParams};
use podprovider_proto::v1 as pb;

use super::{Error, sources::Sources};

/// A token for the pod's service account, bound to the pod, through the TokenRequest API (as the
/// kubelet gets them), and when it expires.
pub(super) async fn service_account_token(
    sources: &Sources,
    pod: &k8s::Pod,
    t: &k8s::ServiceAccountTokenProjection,
) -> Result<(String, SystemTime), Error> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let audiences: Vec<String> = t
        .audience
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // None means the API server's own audiences, as for the kubelet.
            audiences: (!audiences.is_empty()).then_some(audiences),
            expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let what = || format!("service account {}/{account}", sources.namespace);
    let api: Api<ServiceAccount> = Api::namespaced(sources.client.clone(), &sources.namespace);
    let issued = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|source| Error::Kube {
            what: format!("requesting a token for {}", what()),
            source,
        })?;
    let status = issued.status.unwrap_or_default();
    match (status.token, status.expiration_timestamp) {
        (Some(token), Some(expires)) => Ok((token, SystemTime::from(expires.0))),
        _ => Err(Error::Invalid(format!(
            "the API server returned no token for {}",
            what()
        ))),
    }
}

/// The earliest expiry of the service-account tokens in a resolved pod.
pub fn token_expiry(pod: &pb::Pod) -> Option<SystemTime> {
    pod.volumes
        .iter()
        .filter_map(|v| match &v.source {
            Some(pb::volume::Source::Files(f)) => f.token_expiration,
            _ => None,
        })
        .filter_map(|t| SystemTime::try_from(t).ok())
        .min()
}
