//! Arbitrary contract pods for fuzzing a provider's pod → cloud translation (feature `arbitrary`,
//! for tests): names and values from any Unicode, numbers from the whole range (negative, zero,
//! huge), every volume kind, probes, hooks and security settings in any combination, and the
//! cloud-specific annotations providers read. A translation must answer every one of them with a
//! plan or an error (INVALID_ARGUMENT), never a panic.

use podprovider_proto::v1 as pb;
use proptest::{
    collection::vec,
    option,
    prelude::*,
    strategy::BoxedStrategy,
    test_runner::{TestCaseError, TestRunner},
};

/// Runs `check` on [`config`]'s number of arbitrary pods; see [`run`].
pub fn run_on_pods<F>(check: F)
where
    F: Fn(pb::Pod) -> Result<(), TestCaseError> + Send + 'static,
{
    run(pod, check);
}

/// Runs `check` over [`config`]'s number of values of the strategy `make` builds, on a thread
/// with a large stack (nested strategies and deep JSON need more than a test thread's 2 MiB in
/// debug builds; the strategy is built there because boxed strategies are not `Send`); panics
/// with the smallest failing value when `check` fails or panics.
pub fn run<M, S, F>(make: M, check: F)
where
    M: FnOnce() -> S + Send + 'static,
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
{
    let worker = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            TestRunner::new(config())
                .run(&make(), check)
                .map_err(|e| e.to_string())
        });
    match worker.map(|w| w.join()) {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(failure))) => panic!("{failure}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => panic!("cannot start the fuzz thread: {e}"),
    }
}

/// Fails when `message` (a refusal of `pod`) quotes one of its sensitive env values. Values the
/// pod also shows openly (its `Debug` hides sensitive ones) or too short to tell apart may appear.
pub fn check_no_secret_quoted(pod: &pb::Pod, message: &str) -> Result<(), TestCaseError> {
    let public = format!("{pod:?}");
    for c in pod.init_containers.iter().chain(&pod.containers) {
        for v in c.env.iter() {
            let secret = v.sensitive && v.value.len() > 8 && !public.contains(&v.value);
            prop_assert!(!(secret && message.contains(&v.value)), "{message}");
        }
    }
    Ok(())
}

/// Cases per fuzz property in CI; `PROPTEST_CASES` overrides it (scripts/fuzz.sh runs many more).
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        "[a-zA-Z0-9._/:=$()-]{0,40}",
        any::<String>(),
        Just(String::new()),
        Just("x".repeat(300)),
    ]
}

fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..5000,
        Just(0),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
}

fn small() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..70000, Just(-1), any::<i32>()]
}

fn resources() -> impl Strategy<Value = pb::Resources> {
    (
        option::of(number()),
        option::of(number()),
        option::of(number()),
        option::of(number()),
        vec((text(), text()), 0..2),
    )
        .prop_map(|(cpu, mem, eph, gpu, other)| pb::Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            ephemeral_storage_bytes: eph,
            nvidia_gpu: gpu,
            other: other.into_iter().collect(),
        })
}

fn env() -> impl Strategy<Value = pb::EnvVar> {
    (
        text(),
        text(),
        any::<bool>(),
        prop_oneof![Just(String::new()), Just("status.podIP".to_owned()), text()],
    )
        .prop_map(|(name, value, sensitive, pod_field)| pb::EnvVar {
            name,
            value,
            sensitive,
            pod_field,
        })
}

fn probe() -> impl Strategy<Value = pb::Probe> {
    use pb::probe::Handler;
    let handler = prop_oneof![
        vec(text(), 0..3).prop_map(|command| Handler::Exec(pb::ExecAction { command })),
        (text(), small(), text(), text()).prop_map(|(path, port, host, scheme)| {
            Handler::HttpGet(pb::HttpGetAction {
                path,
                port,
                host,
                scheme,
                http_headers: vec![],
            })
        }),
        (small(), text())
            .prop_map(|(port, host)| Handler::TcpSocket(pb::TcpSocketAction { port, host })),
        (small(), text())
            .prop_map(|(port, service)| Handler::Grpc(pb::GrpcAction { port, service })),
    ];
    (
        option::of(handler),
        small(),
        small(),
        small(),
        small(),
        small(),
    )
        .prop_map(|(handler, a, b, c, d, e)| pb::Probe {
            handler,
            initial_delay_seconds: a,
            timeout_seconds: b,
            period_seconds: c,
            success_threshold: d,
            failure_threshold: e,
        })
}

fn hook() -> impl Strategy<Value = pb::LifecycleHandler> {
    use pb::lifecycle_handler::Action;
    prop_oneof![
        vec(text(), 0..3).prop_map(|command| Action::Exec(pb::ExecAction { command })),
        (text(), small()).prop_map(|(path, port)| Action::HttpGet(pb::HttpGetAction {
            path,
            port,
            ..Default::default()
        })),
        small().prop_map(|port| Action::TcpSocket(pb::TcpSocketAction {
            port,
            host: String::new()
        })),
        number().prop_map(Action::SleepSeconds),
    ]
    .prop_map(|a| pb::LifecycleHandler { action: Some(a) })
}

fn security() -> impl Strategy<Value = pb::SecurityContext> {
    (
        option::of(any::<bool>()),
        option::of(number()),
        option::of(number()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        vec(text(), 0..2),
        vec(text(), 0..2),
        prop_oneof![
            Just(String::new()),
            Just("RuntimeDefault".to_owned()),
            text()
        ],
    )
        .prop_map(
            |(privileged, user, group, non_root, ro, add, drop, seccomp)| pb::SecurityContext {
                privileged,
                run_as_user: user,
                run_as_group: group,
                run_as_non_root: non_root,
                read_only_root_filesystem: ro,
                allow_privilege_escalation: None,
                capabilities_add: add,
                capabilities_drop: drop,
                seccomp_profile_type: seccomp,
                seccomp_localhost_profile: String::new(),
            },
        )
}

fn container() -> BoxedStrategy<pb::Container> {
    (
        (
            text(),
            text(),
            0i32..5,
            vec(text(), 0..3),
            vec(text(), 0..3),
        ),
        (
            vec(env(), 0..4),
            vec((text(), small(), text()), 0..3),
            option::of((option::of(resources()), option::of(resources()))),
            vec((text(), text(), text(), any::<bool>()), 0..3),
        ),
        (
            option::of(probe()),
            option::of(probe()),
            option::of(hook()),
            option::of(security()),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (name, image, pull, command, args),
                (env, ports, resources, mounts),
                (live, ready, hook, security_context),
                (tty, stdin, command_sensitive, args_sensitive),
            )| pb::Container {
                name,
                image,
                image_pull_policy: pull,
                command,
                args,
                env,
                ports: ports
                    .into_iter()
                    .map(|(name, container_port, protocol)| pb::ContainerPort {
                        name,
                        container_port,
                        protocol,
                    })
                    .collect(),
                resources: resources
                    .map(|(requests, limits)| pb::ResourceRequirements { requests, limits }),
                volume_mounts: mounts
                    .into_iter()
                    .map(|(name, mount_path, sub_path, read_only)| pb::VolumeMount {
                        name,
                        mount_path,
                        sub_path,
                        read_only,
                    })
                    .collect(),
                liveness_probe: live,
                readiness_probe: ready,
                lifecycle: hook.map(|h| pb::Lifecycle {
                    post_start: None,
                    pre_stop: Some(h),
                }),
                security_context,
                tty,
                stdin,
                command_sensitive,
                args_sensitive,
                ..Default::default()
            },
        )
        .boxed()
}

fn volume() -> BoxedStrategy<pb::Volume> {
    use pb::volume::Source;
    let file = (
        text(),
        vec(any::<u8>(), 0..64),
        option::of(small()),
        any::<bool>(),
    )
        .prop_map(|(path, content, mode, sensitive)| pb::FileEntry {
            path,
            content,
            mode,
            sensitive,
        });
    let source = prop_oneof![
        (text(), option::of(number())).prop_map(|(medium, size_limit_bytes)| {
            Source::EmptyDir(pb::EmptyDirVolume {
                medium,
                size_limit_bytes,
            })
        }),
        (0i32..6, vec(file, 0..4), option::of(small())).prop_map(|(source, files, mode)| {
            Source::Files(pb::FilesVolume {
                source,
                files,
                default_mode: mode,
                token_expiration: None,
            })
        }),
        (text(), text(), any::<bool>()).prop_map(|(server, path, read_only)| {
            Source::Nfs(pb::NfsVolume {
                server,
                path,
                read_only,
            })
        }),
        (text(), text(), text()).prop_map(|(share_name, storage_account_name, key)| {
            Source::AzureFile(pb::AzureFileVolume {
                share_name,
                storage_account_name,
                storage_account_key: key,
                read_only: false,
            })
        }),
        (text(), text(), text()).prop_map(|(repository, revision, directory)| {
            Source::GitRepo(pb::GitRepoVolume {
                repository,
                revision,
                directory,
            })
        }),
        text().prop_map(|kind| Source::Unsupported(pb::UnsupportedVolume { kind })),
    ];
    (text(), option::of(source))
        .prop_map(|(name, source)| pb::Volume { name, source })
        .boxed()
}

/// Annotations providers read, with arbitrary values, plus arbitrary ones.
fn annotations() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        text(),
        Just("virtual-kubelet.io/gpu-type".to_owned()),
        Just("virtual-kubelet.io/aci-public-ip".to_owned()),
        Just("k8s.aliyun.com/eci-use-specs".to_owned()),
        Just("k8s.aliyun.com/eci-spot-strategy".to_owned()),
        Just("k8s.aliyun.com/eci-spot-price-limit".to_owned()),
        Just("k8s.aliyun.com/eci-with-eip".to_owned()),
        Just("k8s.aliyun.com/eci-eip-instanceid".to_owned()),
        Just("k8s.aliyun.com/eip-bandwidth".to_owned()),
        Just("fargate.vk.io/capacity-provider".to_owned()),
        Just("fargate.vk.io/task-role-arn".to_owned()),
    ];
    vec((key, text()), 0..4)
}

/// An arbitrary resolved pod (with a valid pod reference, as the RPC layer checks that first).
pub fn pod() -> BoxedStrategy<pb::Pod> {
    (
        (
            "[a-z0-9-]{1,20}",
            "[a-z0-9-]{1,40}",
            "[a-f0-9-]{1,36}",
            text(),
        ),
        (
            vec(container(), 0..3),
            vec(container(), 0..4),
            vec(volume(), 0..4),
        ),
        (
            0i32..5,
            option::of(number()),
            option::of(number()),
            text(),
            annotations(),
        ),
        (
            text(),
            text(),
            prop_oneof![Just(String::new()), Just("linux".to_owned()), text()],
            vec((text(), text(), text(), text()), 0..2),
        ),
    )
        .prop_map(
            |(
                (namespace, name, uid, node_name),
                (init_containers, containers, volumes),
                (restart_policy, grace, deadline, dns_policy, annotations),
                (hostname, subdomain, os, creds),
            )| pb::Pod {
                pod_ref: Some(pb::PodRef {
                    namespace,
                    name,
                    uid,
                }),
                node_name,
                annotations: annotations.into_iter().collect(),
                init_containers,
                containers,
                volumes,
                restart_policy,
                termination_grace_period_seconds: grace,
                active_deadline_seconds: deadline,
                dns_policy,
                hostname,
                subdomain,
                os,
                registry_credentials: creds
                    .into_iter()
                    .map(
                        |(server, username, password, identity_token)| pb::RegistryCredential {
                            server,
                            username,
                            password,
                            identity_token,
                        },
                    )
                    .collect(),
                ..Default::default()
            },
        )
        .boxed()
}
