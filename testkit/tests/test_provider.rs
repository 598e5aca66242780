//! The steerable test provider behaves as the contract says, over a real unix socket.

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff;
use podprovider_proto::{
    PodProviderClient,
    v1::{
        AttachRequest, AttachStart, Container, CreatePodRequest, DeletePodRequest, EnvVar,
        ExecRequest, ExecStart, ExitStatus, GetContainerLogsRequest, GetStatsRequest,
        ListPodsRequest, Pod, PodPhase, PodRef, PortForwardRequest, PortForwardStart, StreamInput,
        StreamOutput, TerminalSize, WatchPodsRequest, attach_request, exec_request,
        port_forward_request, stream_input, stream_output, watch_pods_event::Event,
    },
};
use provider_common::ListenAddr;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, transport::Endpoint};
use vk_testkit::test_provider::{
    Control, DEFAULT_NANO_CORES, DEFAULT_WORKING_SET_BYTES, RunningServer, rpc, rss_bytes,
    usage_bytes,
};

fn pod(uid: &str) -> Pod {
    Pod {
        pod_ref: Some(PodRef {
            namespace: "default".into(),
            name: format!("p-{uid}"),
            uid: uid.into(),
        }),
        node_name: "vk".into(),
        containers: vec![Container {
            name: "c".into(),
            image: "nginx".into(),
            env: vec![EnvVar {
                name: "GREETING".into(),
                value: "hi there".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn client(
    path: std::path::PathBuf,
) -> anyhow::Result<PodProviderClient<tonic::transport::Channel>> {
    let channel = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?;
    Ok(PodProviderClient::new(channel))
}

#[tokio::test]
async fn create_watch_fail_lose_and_delete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("p.sock");
    let control = Control::new();
    control.set_start_delay(Duration::from_millis(200));
    let server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let mut client = client(socket).await?;

    let mut watch = client
        .watch_pods(WatchPodsRequest {
            node_name: "vk".into(),
        })
        .await?
        .into_inner();
    let first = watch.next().await.transpose()?.and_then(|e| e.event);
    assert!(
        matches!(first, Some(Event::Synced(_))),
        "empty snapshot then synced: {first:?}"
    );

    // Create is idempotent on UID.
    let created = client
        .create_pod(CreatePodRequest {
            pod: Some(pod("u1")),
        })
        .await?
        .into_inner();
    let again = client
        .create_pod(CreatePodRequest {
            pod: Some(pod("u1")),
        })
        .await?
        .into_inner();
    assert_eq!(
        created.status.as_ref().map(|s| &s.pod_ip),
        again.status.as_ref().map(|s| &s.pod_ip)
    );
    assert_eq!(control.pods().len(), 1);
    assert_eq!(control.calls(rpc::CREATE), 2);

    // Pending, then Running after the start delay, on the stream.
    let mut phases = Vec::new();
    while phases.last() != Some(&PodPhase::Running) {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await?;
        if let Some(Event::Status(s)) = event.transpose()?.and_then(|e| e.event) {
            phases.push(s.phase());
        }
    }
    assert_eq!(phases, [PodPhase::Pending, PodPhase::Running]);

    // Steered failures.
    control.fail_creates(Some("no capacity for you"));
    let err = client
        .create_pod(CreatePodRequest {
            pod: Some(pod("u2")),
        })
        .await
        .expect_err("fails");
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "no capacity for you")
    );
    control.fail_creates(None);
    control.fail_next_calls(1);
    let err = client
        .list_pods(ListPodsRequest {
            node_name: "vk".into(),
        })
        .await
        .expect_err("fails");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        client
            .list_pods(ListPodsRequest {
                node_name: "vk".into()
            })
            .await?
            .into_inner()
            .pods
            .len(),
        1
    );

    // A lost pod is reported deleted.
    assert!(control.lose_pod("u1"));
    let deleted = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await?;
        if let Some(Event::Deleted(r)) = event.transpose()?.and_then(|e| e.event) {
            break r;
        }
    };
    assert_eq!(deleted.uid, "u1");

    // Delete of an unknown pod succeeds with found = false.
    let gone = client
        .delete_pod(DeletePodRequest {
            pod_ref: pod("u1").pod_ref,
            grace_period_seconds: Some(0),
        })
        .await?
        .into_inner();
    assert!(!gone.found);
    server.stop().await
}

type Client = PodProviderClient<tonic::transport::Channel>;

/// A provider served on a fresh socket, a client, and running pods with one container "c".
struct Fixture {
    control: Control,
    client: Client,
    server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn running_pods(uids: &[&str]) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("p.sock");
    let control = Control::new();
    let server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let mut client = client(socket).await?;
    for uid in uids {
        client
            .create_pod(CreatePodRequest {
                pod: Some(pod(uid)),
            })
            .await?;
        let phase = control.status(uid).map(|s| s.phase());
        assert_eq!(
            phase,
            Some(PodPhase::Running),
            "no start delay: runs at once"
        );
    }
    Ok(Fixture {
        control,
        client,
        server,
        _dir: dir,
    })
}

fn logs_request(uid: &str) -> GetContainerLogsRequest {
    GetContainerLogsRequest {
        pod_ref: pod(uid).pod_ref,
        container: "c".into(),
        ..Default::default()
    }
}

async fn read_logs(client: &mut Client, req: GetContainerLogsRequest) -> anyhow::Result<String> {
    let mut stream = client.get_container_logs(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
        out.extend(chunk?.data);
    }
    Ok(String::from_utf8(out)?)
}

async fn logs_error(client: &mut Client, req: GetContainerLogsRequest) -> tonic::Status {
    match client.get_container_logs(req).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.next().await {
                Some(Err(status)) => status,
                other => panic!("expected an error, got {other:?}"),
            }
        }
        Err(status) => status,
    }
}

#[tokio::test]
async fn logs_honour_every_option() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1"]).await?;
    assert!(control.append_log("u1", "c", "one"));
    assert!(control.append_log("u1", "c", "two\nthree\n"));
    assert!(!control.append_log("u1", "nope", "x"));
    assert!(!control.append_log("nope", "c", "x"));
    assert_eq!(
        control.log_lines("u1", "c"),
        Some(vec![
            "c started".to_owned(),
            "one".into(),
            "two".into(),
            "three".into()
        ])
    );

    let all = read_logs(&mut client, logs_request("u1")).await?;
    assert_eq!(all, "c started\none\ntwo\nthree\n");

    let tail = |n| GetContainerLogsRequest {
        tail_lines: Some(n),
        ..logs_request("u1")
    };
    assert_eq!(read_logs(&mut client, tail(2)).await?, "two\nthree\n");
    assert_eq!(read_logs(&mut client, tail(0)).await?, "");
    assert_eq!(read_logs(&mut client, tail(99)).await?, all);
    assert_eq!(read_logs(&mut client, tail(-1)).await?, all, "-1 = all");

    // limit_bytes counts what is sent, and may cut a line.
    let limit = |n| GetContainerLogsRequest {
        limit_bytes: Some(n),
        ..logs_request("u1")
    };
    assert_eq!(read_logs(&mut client, limit(5)).await?, "c sta");
    assert_eq!(read_logs(&mut client, limit(13)).await?, "c started\none");
    assert_eq!(read_logs(&mut client, limit(10_000)).await?, all);
    let err = logs_error(&mut client, limit(0)).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Timestamps: RFC 3339 with nine fractional digits, then a space; in order.
    let stamped = read_logs(
        &mut client,
        GetContainerLogsRequest {
            timestamps: true,
            ..logs_request("u1")
        },
    )
    .await?;
    let mut times = Vec::new();
    let mut texts = Vec::new();
    for line in stamped.lines() {
        let (time, text) = line.split_once(' ').expect("timestamp, space, text");
        assert_eq!(time.len(), "2026-11-23T10:00:00.123456789Z".len(), "{line}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{line}");
        times.push(time.parse::<jiff::Timestamp>()?);
        texts.push(text);
    }
    assert_eq!(texts, ["c started", "one", "two", "three"]);
    assert!(times.is_sorted(), "{times:?}");
    let age = jiff::Timestamp::now().duration_since(times[0]);
    assert!(age.as_secs() < 60, "recent: {age:?}");
    // Timestamps and limit_bytes: the limit counts the prefix too.
    let stamped_limit = read_logs(
        &mut client,
        GetContainerLogsRequest {
            timestamps: true,
            limit_bytes: Some(31),
            ..logs_request("u1")
        },
    )
    .await?;
    assert_eq!(
        stamped_limit,
        format!("{} ", stamped.split(' ').next().unwrap_or_default())
    );

    // since_time, and since_seconds which wins over it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    control.append_log("u1", "c", "after the cut");
    let since_time = GetContainerLogsRequest {
        since_time: Some(cut.into()),
        ..logs_request("u1")
    };
    assert_eq!(
        read_logs(&mut client, since_time.clone()).await?,
        "after the cut\n"
    );
    let since_seconds = GetContainerLogsRequest {
        since_seconds: Some(3600),
        ..since_time.clone()
    };
    assert!(
        read_logs(&mut client, since_seconds)
            .await?
            .starts_with("c started\n")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    control.append_log("u1", "c", "fresh");
    let last_second = GetContainerLogsRequest {
        since_seconds: Some(1),
        ..logs_request("u1")
    };
    assert_eq!(read_logs(&mut client, last_second).await?, "fresh\n");
    // Filters combine: of the last five lines, those since the cut.
    let combined = GetContainerLogsRequest {
        tail_lines: Some(5),
        ..since_time
    };
    assert_eq!(
        read_logs(&mut client, combined).await?,
        "after the cut\nfresh\n"
    );

    // previous: NOT_FOUND until the container restarted, then the old instance's log.
    let previous = GetContainerLogsRequest {
        previous: true,
        ..logs_request("u1")
    };
    let err = logs_error(&mut client, previous.clone()).await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("previous terminated container"),
        "{err:?}"
    );
    assert!(control.restart_container("u1", "c", 2));
    let old = read_logs(&mut client, previous).await?;
    assert!(
        old.starts_with("c started\none\n") && old.ends_with("fresh\n"),
        "{old}"
    );
    assert_eq!(
        read_logs(&mut client, logs_request("u1")).await?,
        "c started\n"
    );
    let status = control.status("u1").expect("known");
    assert_eq!(status.container_statuses[0].restart_count, 1);

    // Errors: unknown pod, unknown container, missing ref, not started yet.
    let err = logs_error(&mut client, logs_request("nope")).await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = logs_error(
        &mut client,
        GetContainerLogsRequest {
            container: "other".into(),
            ..logs_request("u1")
        },
    )
    .await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("\"other\""), "{err:?}");
    let err = logs_error(
        &mut client,
        GetContainerLogsRequest {
            pod_ref: None,
            ..logs_request("u1")
        },
    )
    .await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    control.set_start_delay(Duration::from_secs(3600));
    client
        .create_pod(CreatePodRequest {
            pod: Some(pod("pending")),
        })
        .await?;
    let err = logs_error(&mut client, logs_request("pending")).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    assert!(control.calls(rpc::LOGS) >= 15);
    server.stop().await
}

/// The next chunk of a log stream; `None` at its end.
async fn next_chunk(
    stream: &mut tonic::codec::Streaming<podprovider_proto::v1::LogChunk>,
) -> anyhow::Result<Option<String>> {
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
        Some(chunk) => Ok(Some(String::from_utf8(chunk?.data)?)),
        None => Ok(None),
    }
}

#[tokio::test]
async fn logs_follow_until_the_container_ends_or_the_caller_leaves() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1"]).await?;
    let follow = GetContainerLogsRequest {
        follow: true,
        ..logs_request("u1")
    };
    let mut stream = client
        .get_container_logs(follow.clone())
        .await?
        .into_inner();
    assert_eq!(
        next_chunk(&mut stream).await?.as_deref(),
        Some("c started\n")
    );

    // A line appended after the call started arrives.
    control.append_log("u1", "c", "later");
    assert_eq!(next_chunk(&mut stream).await?.as_deref(), Some("later\n"));

    // A follower that only wants new lines (tail 0), and one that goes away.
    let mut tail0 = client
        .get_container_logs(GetContainerLogsRequest {
            tail_lines: Some(0),
            ..follow.clone()
        })
        .await?
        .into_inner();
    let gone = client
        .get_container_logs(follow.clone())
        .await?
        .into_inner();
    drop(gone);
    control.append_log("u1", "c", "newest");
    assert_eq!(next_chunk(&mut tail0).await?.as_deref(), Some("newest\n"));
    assert_eq!(next_chunk(&mut stream).await?.as_deref(), Some("newest\n"));

    // The container terminates: followers get what is left, then the stream ends.
    control.append_log("u1", "c", "last words");
    assert!(control.finish_pod("u1", 0));
    let mut rest = String::new();
    while let Some(chunk) = next_chunk(&mut stream).await? {
        rest.push_str(&chunk);
    }
    assert_eq!(rest, "last words\n");
    assert_eq!(
        next_chunk(&mut tail0).await?.as_deref(),
        Some("last words\n")
    );
    assert_eq!(next_chunk(&mut tail0).await?, None, "ended");

    // Following a terminated container returns its log and ends.
    let done = read_logs(&mut client, follow).await?;
    assert!(done.ends_with("last words\n"), "{done}");
    server.stop().await
}

/// Everything an exec or attach stream sent, checking that `exit` comes last.
#[derive(Debug, Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<ExitStatus>,
}

impl Output {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

async fn collect(mut stream: tonic::codec::Streaming<StreamOutput>) -> anyhow::Result<Output> {
    let mut out = Output::default();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await? {
        assert!(out.exit.is_none(), "exit is the last message");
        match message?.output {
            Some(stream_output::Output::Stdout(data)) => out.stdout.extend(data),
            Some(stream_output::Output::Stderr(data)) => out.stderr.extend(data),
            Some(stream_output::Output::Exit(exit)) => out.exit = Some(exit),
            None => anyhow::bail!("empty output message"),
        }
    }
    Ok(out)
}

fn exec_start(uid: &str, command: &[&str]) -> ExecStart {
    ExecStart {
        pod_ref: pod(uid).pod_ref,
        container: "c".into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

fn exec_first(start: ExecStart) -> ExecRequest {
    ExecRequest {
        request: Some(exec_request::Request::Start(start)),
    }
}

fn exec_input(input: stream_input::Input) -> ExecRequest {
    ExecRequest {
        request: Some(exec_request::Request::Input(StreamInput {
            input: Some(input),
        })),
    }
}

fn stdin(data: &str) -> stream_input::Input {
    stream_input::Input::Stdin(data.as_bytes().to_vec())
}

/// Runs an exec whose request stream is only half-closed when the test drops the sender.
async fn exec_open(
    client: &mut Client,
    start: ExecStart,
    inputs: Vec<stream_input::Input>,
) -> anyhow::Result<(
    mpsc::Sender<ExecRequest>,
    tonic::codec::Streaming<StreamOutput>,
)> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(exec_first(start)).await?;
    for input in inputs {
        tx.send(exec_input(input)).await?;
    }
    let stream = client.exec(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, stream))
}

async fn exec_error(client: &mut Client, start: ExecStart) -> tonic::Status {
    match client.exec(tokio_stream::iter([exec_first(start)])).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.next().await {
                Some(Err(status)) => status,
                other => panic!("expected an error before any output, got {other:?}"),
            }
        }
        Err(status) => status,
    }
}

#[tokio::test]
async fn exec_runs_a_real_process() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1"]).await?;

    // stdin piped, then stdin_closed while the request stream stays open.
    let (tx, stream) = exec_open(
        &mut client,
        exec_start("u1", &["sh", "-c", "cat; echo err >&2; exit 3"]),
        vec![
            stdin("hello\n"),
            stdin("world\n"),
            stream_input::Input::StdinClosed(true),
        ],
    )
    .await?;
    let out = collect(stream).await?;
    drop(tx);
    assert_eq!(out.stdout(), "hello\nworld\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit.map(|e| e.code), Some(3));

    // A half-closed request stream means stdin closed; argv is passed as is (no shell).
    let requests = [
        exec_first(exec_start("u1", &["cat"])),
        exec_input(stdin("$HOME 'quoted'\n")),
    ];
    let out = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    assert_eq!(out.stdout(), "$HOME 'quoted'\n");
    assert_eq!(out.exit, Some(ExitStatus::default()));
    let requests = [exec_first(exec_start("u1", &["echo", "a  b", "$c"]))];
    let out = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    assert_eq!(out.stdout(), "a  b $c\n");

    // The container's environment; a working directory that persists between execs.
    let requests = [exec_first(exec_start(
        "u1",
        &["sh", "-c", "echo $GREETING; touch here; pwd"],
    ))];
    let first = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    let first = first.stdout();
    assert!(first.starts_with("hi there\n"), "{first}");
    let requests = [exec_first(exec_start("u1", &["ls"]))];
    let listed = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    assert_eq!(listed.stdout(), "here\n");

    // Only what the client asked for.
    let quiet = ExecStart {
        stderr: false,
        ..exec_start("u1", &["sh", "-c", "echo out; echo err >&2"])
    };
    let out = collect(
        client
            .exec(tokio_stream::iter([exec_first(quiet)]))
            .await?
            .into_inner(),
    )
    .await?;
    assert_eq!((out.stdout(), out.stderr.len()), ("out\n".to_owned(), 0));

    // Commands that cannot start end with exit 127 / 126 and a message.
    let requests = [exec_first(exec_start("u1", &["no-such-binary-vk"]))];
    let out = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    let exit = out.exit.expect("exit");
    assert_eq!(exit.code, 127);
    assert!(exit.message.contains("no-such-binary-vk"), "{exit:?}");
    let requests = [exec_first(exec_start("u1", &["/etc/passwd"]))];
    let out = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    let exit = out.exit.expect("exit");
    assert_eq!(exit.code, 126, "{exit:?}");
    assert!(!exit.message.is_empty());

    // A signal: 128 + its number, like a shell.
    let requests = [exec_first(exec_start("u1", &["sh", "-c", "kill -9 $$"]))];
    let out = collect(
        client
            .exec(tokio_stream::iter(requests))
            .await?
            .into_inner(),
    )
    .await?;
    assert_eq!(out.exit.map(|e| e.code), Some(137));

    assert!(control.calls(rpc::EXEC) >= 9);
    server.stop().await
}

#[tokio::test]
async fn exec_with_a_tty() -> anyhow::Result<()> {
    let Fixture {
        mut client,
        server,
        _dir,
        ..
    } = running_pods(&["u1"]).await?;
    let start = ExecStart {
        tty: true,
        terminal_size: Some(TerminalSize {
            width: 100,
            height: 30,
        }),
        ..exec_start(
            "u1",
            &[
                "sh",
                "-c",
                "stty size; read x; echo got:$x; echo err >&2; tty -s && echo is-a-tty; stty size",
            ],
        )
    };
    let (tx, mut stream) = exec_open(&mut client, start, Vec::new()).await?;
    // The initial size, before anything is typed.
    let mut first = String::new();
    while !first.contains('\n') {
        first.push_str(&next_stdout(&mut stream).await?);
    }
    assert_eq!(first, "30 100\r\n");
    // Resize before the input, so the last `stty size` sees the new size.
    tx.send(exec_input(stream_input::Input::Resize(TerminalSize {
        width: 120,
        height: 40,
    })))
    .await?;
    tx.send(exec_input(stdin("hello\n"))).await?;
    let out = collect(stream).await?;
    drop(tx);
    let text = out.stdout();
    // A terminal: CRLF line ends, echo of the input, stderr merged into stdout.
    assert!(text.starts_with("hello\r\n"), "echo: {text:?}");
    assert!(text.contains("got:hello\r\n"), "{text:?}");
    assert!(text.contains("err\r\n"), "{text:?}");
    assert!(text.contains("is-a-tty\r\n"), "{text:?}");
    assert!(text.ends_with("40 120\r\n"), "{text:?}");
    assert!(out.stderr.is_empty());
    assert_eq!(out.exit, Some(ExitStatus::default()));

    // stdin_closed reaches a reader on the terminal as end of input.
    let start = ExecStart {
        tty: true,
        ..exec_start("u1", &["sh", "-c", "cat >/dev/null; echo eof"])
    };
    let (tx, stream) = exec_open(
        &mut client,
        start,
        vec![stdin("x\n"), stream_input::Input::StdinClosed(true)],
    )
    .await?;
    let out = collect(stream).await?;
    drop(tx);
    assert!(out.stdout().contains("eof"), "{out:?}");
    assert_eq!(out.exit.map(|e| e.code), Some(0));

    // A missing binary is 127 with a TTY too.
    let start = ExecStart {
        tty: true,
        ..exec_start("u1", &["no-such-binary-vk"])
    };
    let out = collect(
        client
            .exec(tokio_stream::iter([exec_first(start)]))
            .await?
            .into_inner(),
    )
    .await?;
    assert_eq!(out.exit.map(|e| e.code), Some(127));
    server.stop().await
}

/// Whether a process is gone (or a zombie waiting to be reaped).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

async fn wait_gone(pid: &str) -> bool {
    for _ in 0..100 {
        if process_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn exec_is_killed_with_its_caller_or_its_container() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1", "u2"]).await?;
    let sleeper = ["sh", "-c", "sleep 1000 & echo $!; wait"];

    // The caller goes away: the process and what it started are killed.
    let (tx, mut stream) = exec_open(&mut client, exec_start("u1", &sleeper), Vec::new()).await?;
    let pid = match stream.next().await.transpose()?.and_then(|m| m.output) {
        Some(stream_output::Output::Stdout(data)) => String::from_utf8(data)?.trim().to_owned(),
        other => anyhow::bail!("expected the pid, got {other:?}"),
    };
    assert!(!process_gone(&pid), "sleep {pid} runs");
    drop(stream);
    drop(tx);
    assert!(wait_gone(&pid).await, "sleep {pid} was killed");

    // The container stops: exit 137 with a message.
    let (tx, mut stream) = exec_open(&mut client, exec_start("u2", &sleeper), Vec::new()).await?;
    let pid = match stream.next().await.transpose()?.and_then(|m| m.output) {
        Some(stream_output::Output::Stdout(data)) => String::from_utf8(data)?.trim().to_owned(),
        other => anyhow::bail!("expected the pid, got {other:?}"),
    };
    assert!(control.finish_pod("u2", 0));
    let out = collect(stream).await?;
    drop(tx);
    let exit = out.exit.expect("exit");
    assert_eq!(exit.code, 137, "{exit:?}");
    assert!(exit.message.contains("killed"), "{exit:?}");
    assert!(wait_gone(&pid).await, "sleep {pid} was killed");
    server.stop().await
}

#[tokio::test]
async fn exec_needs_a_running_container() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1"]).await?;
    control.set_start_delay(Duration::from_secs(3600));
    client
        .create_pod(CreatePodRequest {
            pod: Some(pod("pending")),
        })
        .await?;
    let err = exec_error(&mut client, exec_start("pending", &["true"])).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not running"), "{err:?}");

    assert!(control.finish_pod("u1", 0));
    let err = exec_error(&mut client, exec_start("u1", &["true"])).await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Unknown pod or container: NOT_FOUND, as the contract says for any RPC naming them.
    let err = exec_error(&mut client, exec_start("nope", &["true"])).await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = exec_error(
        &mut client,
        ExecStart {
            container: "other".into(),
            ..exec_start("u1", &["true"])
        },
    )
    .await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Not starting with `start`, or no command.
    let err = match client
        .exec(tokio_stream::iter([exec_input(stdin("x"))]))
        .await
    {
        Ok(r) => r.into_inner().next().await.and_then(Result::err),
        Err(e) => Some(e),
    };
    assert_eq!(err.map(|e| e.code()), Some(Code::InvalidArgument));
    let err = exec_error(&mut client, exec_start("u1", &[])).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    server.stop().await
}

fn attach_first(uid: &str, stdin: bool) -> AttachRequest {
    AttachRequest {
        request: Some(attach_request::Request::Start(AttachStart {
            pod_ref: pod(uid).pod_ref,
            container: "c".into(),
            stdin,
            stdout: true,
            stderr: true,
            ..Default::default()
        })),
    }
}

fn attach_input(input: stream_input::Input) -> AttachRequest {
    AttachRequest {
        request: Some(attach_request::Request::Input(StreamInput {
            input: Some(input),
        })),
    }
}

/// The next message of an output stream, which must be stdout.
async fn next_stdout(stream: &mut tonic::codec::Streaming<StreamOutput>) -> anyhow::Result<String> {
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await?;
    match next.transpose()?.and_then(|m| m.output) {
        Some(stream_output::Output::Stdout(data)) => Ok(String::from_utf8(data)?),
        other => anyhow::bail!("expected stdout, got {other:?}"),
    }
}

#[tokio::test]
async fn attach_echoes_and_ends_with_the_main_process() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1"]).await?;
    // An interactive client and an output-only one (which half-closes at once).
    let (tx, rx) = mpsc::channel(16);
    tx.send(attach_first("u1", true)).await?;
    let mut interactive = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    let mut watcher = client
        .attach(tokio_stream::iter([attach_first("u1", false)]))
        .await?
        .into_inner();

    // stdin is echoed to every attached client and lands in the log; partial lines wait for
    // their newline.
    tx.send(attach_input(stdin("hel"))).await?;
    tx.send(attach_input(stdin("lo\n"))).await?;
    assert_eq!(next_stdout(&mut interactive).await?, "hello\n");
    assert_eq!(next_stdout(&mut watcher).await?, "hello\n");
    // Lines from the test reach attached clients too.
    control.append_log("u1", "c", "from the test");
    assert_eq!(next_stdout(&mut interactive).await?, "from the test\n");
    assert_eq!(next_stdout(&mut watcher).await?, "from the test\n");
    let log = control.log_lines("u1", "c").unwrap_or_default();
    assert_eq!(log, ["c started", "hello", "from the test"]);

    // Detaching (stdin closed) ends that stream without `exit`, after the echo of its last line.
    tx.send(attach_input(stdin("bye\n"))).await?;
    tx.send(attach_input(stream_input::Input::StdinClosed(true)))
        .await?;
    let out = collect(interactive).await?;
    assert_eq!((out.stdout(), out.exit), ("bye\n".to_owned(), None));
    assert_eq!(next_stdout(&mut watcher).await?, "bye\n");

    // The main process ends while attached: `exit` with its code, then the end.
    assert!(control.finish_pod("u1", 7));
    let out = collect(watcher).await?;
    assert_eq!(out.exit.map(|e| e.code), Some(7));
    assert!(out.stdout.is_empty());

    // Not running any more: FAILED_PRECONDITION; unknown pod: NOT_FOUND.
    let err = match client
        .attach(tokio_stream::iter([attach_first("u1", false)]))
        .await
    {
        Ok(r) => r.into_inner().next().await.and_then(Result::err),
        Err(e) => Some(e),
    };
    assert_eq!(err.map(|e| e.code()), Some(Code::FailedPrecondition));
    let err = client
        .attach(tokio_stream::iter([attach_first("nope", false)]))
        .await
        .err();
    assert_eq!(err.map(|e| e.code()), Some(Code::NotFound));
    assert_eq!(control.calls(rpc::ATTACH), 4);
    server.stop().await
}

#[tokio::test]
async fn stats_report_running_pods() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1", "u2"]).await?;
    control.set_start_delay(Duration::from_secs(3600));
    client
        .create_pod(CreatePodRequest {
            pod: Some(pod("pending")),
        })
        .await?;
    const MIB: u64 = 1024 * 1024;
    assert!(control.set_usage("u1", "c", 250_000_000, 100 * MIB));
    assert!(!control.set_usage("u1", "nope", 1, 1));

    let all = client
        .get_stats(GetStatsRequest {
            node_name: "vk".into(),
            pods: Vec::new(),
        })
        .await?
        .into_inner();
    let mut uids: Vec<_> = all
        .pods
        .iter()
        .filter_map(|p| p.pod_ref.as_ref().map(|r| r.uid.clone()))
        .collect();
    uids.sort();
    assert_eq!(uids, ["u1", "u2"], "running pods only");

    let one = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            let stats = client
                .get_stats(GetStatsRequest {
                    node_name: "vk".into(),
                    pods: vec![pod("u1").pod_ref.unwrap_or_default()],
                })
                .await?
                .into_inner();
            anyhow::ensure!(stats.pods.len() == 1, "{stats:?}");
            Ok(stats.pods[0].clone())
        }
    };
    let first = one(&mut client).await?;
    assert!(first.time.is_some());
    assert_eq!(first.containers.len(), 1);
    let c = &first.containers[0];
    assert_eq!(c.name, "c");
    assert!(c.time.is_some());
    let cpu = c.cpu.expect("cpu");
    let memory = c.memory.expect("memory");
    assert_eq!(cpu.usage_nano_cores, Some(250_000_000));
    assert_eq!(memory.working_set_bytes, Some(100 * MIB));
    assert_eq!(memory.usage_bytes, Some(usage_bytes(100 * MIB)));
    assert_eq!(memory.rss_bytes, Some(rss_bytes(100 * MIB)));
    assert!(memory.rss_bytes <= memory.working_set_bytes);
    assert!(memory.working_set_bytes <= memory.usage_bytes);
    assert_eq!(first.cpu, c.cpu, "pod = sum of its one container");
    assert_eq!(first.memory, c.memory);

    // Cumulative CPU accrues at the rate while running and never decreases.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = one(&mut client).await?;
    let used = |p: &podprovider_proto::v1::PodStats| {
        p.cpu.and_then(|c| c.usage_core_nano_seconds).unwrap_or(0)
    };
    let delta = used(&second)
        .checked_sub(used(&first))
        .expect("cumulative CPU never decreases");
    assert!(
        (50_000_000..=2_500_000_000).contains(&delta),
        "at least 200 ms at a quarter core: {delta}"
    );
    control.set_usage("u1", "c", 0, 100 * MIB);
    let third = one(&mut client).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fourth = one(&mut client).await?;
    assert!(used(&third) >= used(&second));
    assert_eq!(used(&fourth), used(&third), "rate 0: no more CPU time");

    // Defaults for containers never set.
    let u2 = all
        .pods
        .iter()
        .find(|p| p.pod_ref.as_ref().is_some_and(|r| r.uid == "u2"))
        .expect("u2");
    let c = &u2.containers[0];
    assert_eq!(
        c.cpu.and_then(|c| c.usage_nano_cores),
        Some(DEFAULT_NANO_CORES)
    );
    assert_eq!(
        c.memory.and_then(|m| m.working_set_bytes),
        Some(DEFAULT_WORKING_SET_BYTES)
    );

    // A finished pod has no figures.
    control.finish_pod("u2", 0);
    let after = client
        .get_stats(GetStatsRequest {
            node_name: "vk".into(),
            pods: Vec::new(),
        })
        .await?
        .into_inner();
    assert_eq!(after.pods.len(), 1);
    assert_eq!(control.calls(rpc::STATS), 6);
    server.stop().await
}

#[tokio::test]
async fn port_forward_is_unimplemented() -> anyhow::Result<()> {
    let Fixture {
        control,
        mut client,
        server,
        _dir,
    } = running_pods(&["u1"]).await?;
    let start = PortForwardRequest {
        request: Some(port_forward_request::Request::Start(PortForwardStart {
            pod_ref: pod("u1").pod_ref,
            port: 80,
        })),
    };
    let err = match client.port_forward(tokio_stream::iter([start])).await {
        Ok(r) => r.into_inner().next().await.and_then(Result::err),
        Err(e) => Some(e),
    }
    .expect("an error");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("not supported"), "{err:?}");
    assert_eq!(control.calls(rpc::PORT_FORWARD), 1);
    server.stop().await
}

/// The provider's unix socket is for its user only, and a path that is not a socket is never
/// removed to make room for one.
#[tokio::test]
async fn the_unix_socket_is_private_and_nothing_else_is_replaced() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("p.sock");
    let control = Control::new();
    let server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    server.stop().await?;

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me")?;
    let refused = control.serve(ListenAddr::Unix(file.clone())).await;
    assert!(
        refused.is_err(),
        "serving on a regular file's path must fail"
    );
    assert_eq!(std::fs::read_to_string(&file)?, "keep me");
    Ok(())
}
