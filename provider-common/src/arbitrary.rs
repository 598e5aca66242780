//! Arbitrary contract pods for fuzzing a provider's pod → cloud translation (feature `arbitrary`,
//! for tests): names and values from any Unicode, numbers from the whole range (negative, zero,
//! huge), every volume kind, probes, hooks and security settings in any combination, and the
//! cloud-specific annotations providers read. A translation must answer every one of them with a
//! plan or an error (INVALID_ARGUMENT), never a panic.
//!
//! Also arbitrary JSON for fuzzing the parsing of cloud answers ([`json_value`], [`answer_bytes`],
//! [`mutated`]): any value, or a realistic answer with random places replaced, removed or nulled,
//! the keys and strings often a cloud's own ([`Vocabulary`]) so objects hit real fields.

use podprovider_proto::v1 as pb;
use proptest::{
    collection::{btree_map, vec},
    option,
    prelude::*,
    strategy::BoxedStrategy,
    test_runner::{TestCaseError, TestRunner},
};
use serde_json::Value;

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

/// A cloud's words: the field names of its answers and string values they carry (states,
/// metric names), which the JSON generators prefer to arbitrary ones.
#[derive(Clone, Copy, Debug)]
pub struct Vocabulary {
    /// Field names.
    pub keys: &'static [&'static str],
    /// String values.
    pub strings: &'static [&'static str],
}

/// Strings any cloud's parser must survive: timestamps at the edges of what parses, addresses
/// good and bad, numbers as text.
const EDGE_STRINGS: &[&str] = &[
    "",
    ":",
    "2024-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "0000-01-01T00:00:00Z",
    "2024-01-01T00:00:00+23:59",
    "2024-13-45T99:99:99Z",
    "10.0.0.4",
    "fd00::4",
    "10.0.0.300",
    " 10.0.0.4",
    "-1",
    "18446744073709551616",
    "NaN",
];

fn json_text(words: Vocabulary) -> BoxedStrategy<String> {
    let edge = prop::sample::select(EDGE_STRINGS).prop_map(str::to_owned);
    let any_text = prop_oneof!["[a-zA-Z0-9: .-]{0,20}", any::<String>()];
    if words.strings.is_empty() {
        prop_oneof![edge, any_text].boxed()
    } else {
        let own = prop::sample::select(words.strings).prop_map(str::to_owned);
        prop_oneof![2 => own, 1 => edge, 1 => any_text].boxed()
    }
}

fn json_key(words: Vocabulary) -> BoxedStrategy<String> {
    if words.keys.is_empty() {
        any::<String>().boxed()
    } else {
        let own = prop::sample::select(words.keys).prop_map(str::to_owned);
        prop_oneof![3 => own, 1 => any::<String>()].boxed()
    }
}

/// JSON numbers over every range serde_json holds (NaN and infinities have no JSON form).
fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            any::<f64>(),
            Just(f64::MAX),
            Just(-0.0),
            Just(0.5),
            Just(1e300),
            Just(-1e300)
        ]
        .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(i64::from(i32::MAX) + 1)),
        Just(Value::from(i32::MIN)),
        Just(Value::from(-1)),
        Just(Value::from(0)),
    ]
}

/// Any JSON value, up to 4 levels deep, keys and strings often from `words`.
pub fn json_value(words: Vocabulary) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_text(words).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(json_key(words), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An answer body: random bytes, or arbitrary JSON encoded.
pub fn answer_bytes(words: Vocabulary) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..512),
        json_value(words).prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
    ]
    .boxed()
}

/// One step of a path into a JSON value.
#[derive(Clone, Debug)]
enum PathStep {
    Index(usize),
    Key(String),
}

/// What to do at one place of a realistic answer.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(Value),
    Remove,
    Null,
}

/// Every path to a value in `v`, the root's (empty) included.
fn paths(v: &Value, at: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(PathStep::Index(i));
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                at.push(PathStep::Key(k.clone()));
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn apply(v: &mut Value, path: &[PathStep], m: Mutation) {
    let Some((last, parents)) = path.split_last() else {
        if let Mutation::Replace(new) = m {
            *v = new;
        }
        return;
    };
    let mut at = v;
    for step in parents {
        let next = match (step, at) {
            (PathStep::Index(i), Value::Array(a)) => a.get_mut(*i),
            (PathStep::Key(k), Value::Object(o)) => o.get_mut(k),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    match (last, at, m) {
        (PathStep::Key(k), Value::Object(o), Mutation::Remove) => {
            o.remove(k);
        }
        (PathStep::Index(i), Value::Array(a), Mutation::Remove) if *i < a.len() => {
            a.remove(*i);
        }
        (PathStep::Key(k), Value::Object(o), Mutation::Replace(new)) => {
            o.insert(k.clone(), new);
        }
        (PathStep::Key(k), Value::Object(o), Mutation::Null) => {
            o.insert(k.clone(), Value::Null);
        }
        (PathStep::Index(i), Value::Array(a), m) => {
            if let Some(slot) = a.get_mut(*i) {
                *slot = match m {
                    Mutation::Replace(new) => new,
                    _ => Value::Null,
                };
            }
        }
        _ => {}
    }
}

/// `template` (a realistic answer) with up to `max` random places, the whole included, replaced
/// by arbitrary JSON, removed or nulled.
pub fn mutated(template: Value, max: usize, words: Vocabulary) -> BoxedStrategy<Value> {
    let mutation = prop_oneof![
        3 => json_value(words).prop_map(Mutation::Replace),
        1 => Just(Mutation::Remove),
        1 => Just(Mutation::Null),
    ];
    vec((any::<prop::sample::Index>(), mutation), 0..=max)
        .prop_map(move |ms| {
            let mut v = template.clone();
            for (pick, m) in ms {
                let mut all = Vec::new();
                paths(&v, &mut Vec::new(), &mut all);
                let path = pick.get(&all).clone();
                apply(&mut v, &path, m);
            }
            v
        })
        .boxed()
}
