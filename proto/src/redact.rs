//! `Debug` for the contract messages that can hold secrets: a sensitive value prints as
//! `<redacted>`, so a stray `{:?}` of a pod, a request or a log line never shows one. Every other
//! field prints as prost's derived `Debug` would.

use std::fmt;

use crate::v1::{
    AzureFileVolume, Container, EnvVar, FileEntry, ImagePullPolicy, RegistryCredential,
};

const REDACTED: &str = "<redacted>";

/// Prints `REDACTED` in place of a value.
struct Hidden;

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

fn shown<T: fmt::Debug>(value: &T, sensitive: bool) -> &dyn fmt::Debug {
    if sensitive { &Hidden } else { value }
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", shown(&self.value, self.sensitive))
            .field("sensitive", &self.sensitive)
            .field("pod_field", &self.pod_field)
            .finish()
    }
}

impl fmt::Debug for FileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileEntry")
            .field("path", &self.path)
            .field("content", shown(&self.content, self.sensitive))
            .field("mode", &self.mode)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole message is sensitive (the contract says so), the server included.
        f.debug_struct("RegistryCredential")
            .field("server", &Hidden)
            .field("username", &Hidden)
            .field("password", &Hidden)
            .field("identity_token", &Hidden)
            .finish()
    }
}

impl fmt::Debug for AzureFileVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureFileVolume")
            .field("share_name", &self.share_name)
            .field("storage_account_name", &self.storage_account_name)
            .field("storage_account_key", &Hidden)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pull = ImagePullPolicy::try_from(self.image_pull_policy);
        let pull: &dyn fmt::Debug = match &pull {
            Ok(p) => p,
            Err(_) => &self.image_pull_policy,
        };
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("image_pull_policy", pull)
            .field("command", shown(&self.command, self.command_sensitive))
            .field("args", shown(&self.args, self.args_sensitive))
            .field("working_dir", &self.working_dir)
            .field("env", &self.env)
            .field("ports", &self.ports)
            .field("resources", &self.resources)
            .field("volume_mounts", &self.volume_mounts)
            .field("liveness_probe", &self.liveness_probe)
            .field("readiness_probe", &self.readiness_probe)
            .field("startup_probe", &self.startup_probe)
            .field("lifecycle", &self.lifecycle)
            .field("security_context", &self.security_context)
            .field("stdin", &self.stdin)
            .field("stdin_once", &self.stdin_once)
            .field("tty", &self.tty)
            .field("command_sensitive", &self.command_sensitive)
            .field("args_sensitive", &self.args_sensitive)
            .field(
                "termination_message_policy",
                &self.termination_message_policy,
            )
            .field("termination_message_path", &self.termination_message_path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::v1::{CreatePodRequest, FilesVolume, Pod, UpdatePodRequest, Volume, volume::Source};

    use super::*;

    const CANARY: &str = "canary-5b1d-secret";

    fn secret_pod() -> Pod {
        Pod {
            containers: vec![Container {
                name: "c".into(),
                command: vec![format!("--token={CANARY}")],
                command_sensitive: true,
                args: vec![CANARY.into()],
                args_sensitive: true,
                env: vec![
                    EnvVar {
                        name: "SECRET".into(),
                        value: CANARY.into(),
                        sensitive: true,
                        ..Default::default()
                    },
                    EnvVar {
                        name: "PLAIN".into(),
                        value: "visible".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            volumes: vec![
                Volume {
                    name: "s".into(),
                    source: Some(Source::Files(FilesVolume {
                        files: vec![FileEntry {
                            path: "key".into(),
                            content: CANARY.as_bytes().to_vec(),
                            sensitive: true,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                },
                Volume {
                    name: "a".into(),
                    source: Some(Source::AzureFile(AzureFileVolume {
                        share_name: "share".into(),
                        storage_account_key: CANARY.into(),
                        ..Default::default()
                    })),
                },
            ],
            registry_credentials: vec![RegistryCredential {
                server: CANARY.into(),
                username: CANARY.into(),
                password: CANARY.into(),
                identity_token: CANARY.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn no_secret_in_any_debug_output() {
        let pod = secret_pod();
        let printed = [
            format!("{pod:?}"),
            format!("{pod:#?}"),
            format!(
                "{:?}",
                CreatePodRequest {
                    pod: Some(pod.clone())
                }
            ),
            format!(
                "{:?}",
                UpdatePodRequest {
                    pod: Some(pod.clone())
                }
            ),
        ];
        let canary_bytes = format!("{:?}", CANARY.as_bytes());
        for text in &printed {
            assert!(!text.contains(CANARY), "{text}");
            assert!(
                !text.contains(&canary_bytes[1..20]),
                "file bytes printed: {text}"
            );
        }
        // What is not secret still shows.
        assert!(printed[0].contains("visible") && printed[0].contains("share"));
    }

    #[test]
    fn unflagged_values_print_as_prost_would() {
        let c = Container {
            name: "c".into(),
            command: vec!["sh".into()],
            image_pull_policy: ImagePullPolicy::Always as i32,
            ..Default::default()
        };
        let text = format!("{c:?}");
        assert!(text.contains(r#"command: ["sh"]"#), "{text}");
        assert!(text.contains("image_pull_policy: Always"), "{text}");
    }
}
