//! Volumes: ConfigMap, Secret, downwardAPI and projected volumes become files carried in the
//! contract; other volume types are described for the provider to create.

use std::time::SystemTime;

use k8s_openapi::api::core::v1 as k8s;
use podprovider_proto::v1 as pb;

use crate::quantity;

use super::{
    Error, Warning,
    downward::downward_files,
    env::utf8,
    sources::{Kind, Sources},
    tokens::service_account_token,
};

pub(super) async fn volume(
    sources: &mut Sources,
    pod: &k8s::Pod,
    v: &k8s::Volume,
    warnings: &mut Vec<Warning>,
) -> Result<pb::Volume, Error> {
    use pb::volume::Source;
    let what = format!("volume {}", v.name);
    let files = |source: pb::FilesSource, files, default_mode, token_expiration| {
        Source::Files(pb::FilesVolume {
            source: source as i32,
            files,
            default_mode,
            token_expiration,
        })
    };
    let source = if let Some(e) = &v.empty_dir {
        Source::EmptyDir(pb::EmptyDirVolume {
            medium: e.medium.clone().unwrap_or_default(),
            size_limit_bytes: e
                .size_limit
                .as_ref()
                .and_then(|q| quantity::to_units(&q.0).ok()),
        })
    } else if let Some(cm) = &v.config_map {
        let key_source = (
            Kind::ConfigMap,
            cm.name.as_str(),
            cm.items.as_deref(),
            cm.optional,
        );
        let entries = key_files(sources, key_source, &what, warnings).await?;
        files(pb::FilesSource::ConfigMap, entries, cm.default_mode, None)
    } else if let Some(sv) = &v.secret {
        let name = sv.secret_name.as_deref().unwrap_or_default();
        let key_source = (Kind::Secret, name, sv.items.as_deref(), sv.optional);
        let entries = key_files(sources, key_source, &what, warnings).await?;
        files(pb::FilesSource::Secret, entries, sv.default_mode, None)
    } else if let Some(d) = &v.downward_api {
        let entries = downward_files(pod, d.items.as_deref().unwrap_or_default())?;
        files(pb::FilesSource::DownwardApi, entries, d.default_mode, None)
    } else if let Some(p) = &v.projected {
        let (entries, expiry) = projected_files(sources, pod, p, &what, warnings).await?;
        let expiry = expiry.map(prost_types::Timestamp::from);
        files(pb::FilesSource::Projected, entries, p.default_mode, expiry)
    } else if let Some(n) = &v.nfs {
        Source::Nfs(pb::NfsVolume {
            server: n.server.clone(),
            path: n.path.clone(),
            read_only: n.read_only.unwrap_or(false),
        })
    } else if let Some(a) = &v.azure_file {
        let data = sources
            .lookup(Kind::Secret, &a.secret_name, false, &what, warnings)
            .await?
            .unwrap_or_default();
        let field = |key: &str| {
            data.get(key).map(|v| utf8(v)).ok_or_else(|| {
                Error::MandatorySecretNotFound(format!(
                    "key {key} not found in {} ({what})",
                    sources.describe(Kind::Secret, &a.secret_name)
                ))
            })
        };
        Source::AzureFile(pb::AzureFileVolume {
            share_name: a.share_name.clone(),
            storage_account_name: field("azurestorageaccountname")?,
            storage_account_key: field("azurestorageaccountkey")?,
            read_only: a.read_only.unwrap_or(false),
        })
    } else if let Some(g) = &v.git_repo {
        Source::GitRepo(pb::GitRepoVolume {
            repository: g.repository.clone(),
            revision: g.revision.clone().unwrap_or_default(),
            directory: g.directory.clone().unwrap_or_default(),
        })
    } else {
        Source::Unsupported(pb::UnsupportedVolume {
            kind: volume_kind(v).to_owned(),
        })
    };
    Ok(pb::Volume {
        name: v.name.clone(),
        source: Some(source),
    })
}

/// A ConfigMap or Secret as files: `(kind, name, items, optional)`.
pub(super) type KeySource<'a> = (Kind, &'a str, Option<&'a [k8s::KeyToPath]>, Option<bool>);

/// A ConfigMap's or Secret's files: all keys, or the listed `items` (a missing listed key is an
/// error naming it). A missing optional object gives no files.
pub(super) async fn key_files(
    sources: &mut Sources,
    (kind, name, items, optional): KeySource<'_>,
    what: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<pb::FileEntry>, Error> {
    let data = sources
        .lookup(kind, name, optional.unwrap_or(false), what, warnings)
        .await?;
    let sensitive = kind.sensitive();
    Ok(match (data, items) {
        (None, _) => Vec::new(),
        (Some(data), Some(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                let content = data.get(&item.key).ok_or_else(|| {
                    kind.missing(format!(
                        "key {} not found in {} ({what})",
                        item.key,
                        sources.describe(kind, name)
                    ))
                })?;
                Ok(pb::FileEntry {
                    path: item.path.clone(),
                    content: content.clone(),
                    mode: item.mode,
                    sensitive,
                })
            })
            .collect::<Result<_, Error>>()?,
        (Some(data), _) => data
            .into_iter()
            .map(|(path, content)| pb::FileEntry {
                path,
                content,
                mode: None,
                sensitive,
            })
            .collect(),
    })
}

/// A projected volume's files, and the earliest expiry of its service-account tokens.
pub(super) async fn projected_files(
    sources: &mut Sources,
    pod: &k8s::Pod,
    p: &k8s::ProjectedVolumeSource,
    what: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<pb::FileEntry>, Option<SystemTime>), Error> {
    let mut files = Vec::new();
    let mut expiry: Option<SystemTime> = None;
    for source in p.sources.iter().flatten() {
        if let Some(cm) = &source.config_map {
            let key_source = (
                Kind::ConfigMap,
                cm.name.as_str(),
                cm.items.as_deref(),
                cm.optional,
            );
            files.extend(key_files(sources, key_source, what, warnings).await?);
        }
        if let Some(sv) = &source.secret {
            let key_source = (
                Kind::Secret,
                sv.name.as_str(),
                sv.items.as_deref(),
                sv.optional,
            );
            files.extend(key_files(sources, key_source, what, warnings).await?);
        }
        if let Some(d) = &source.downward_api {
            files.extend(downward_files(pod, d.items.as_deref().unwrap_or_default())?);
        }
        if let Some(t) = &source.service_account_token {
            let (token, expires) = service_account_token(sources, pod, t).await?;
            expiry = Some(expiry.map_or(expires, |e| e.min(expires)));
            files.push(pb::FileEntry {
                path: t.path.clone(),
                content: token.into_bytes(),
                mode: None,
                sensitive: true,
            });
        }
    }
    Ok((files, expiry))
}

pub(super) fn volume_kind(v: &k8s::Volume) -> &'static str {
    if v.host_path.is_some() {
        "hostPath"
    } else if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.projected.is_some() {
        "projected"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else if v.csi.is_some() {
        "csi"
    } else if v.azure_file.is_some() {
        "azureFile"
    } else if v.ephemeral.is_some() {
        "ephemeral"
    } else {
        "unknown"
    }
}
