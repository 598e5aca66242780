//! Session tests: the test plays the Go spdystream client (kube-apiserver /
//! kubectl) with the frame codec over an in-memory duplex pipe.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spdy::{
    Codec, Config, Error, Frame, FrameError, GoAwayStatus, Headers, RstStatus, Session, kube,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

const STEP: Duration = Duration::from_secs(5);

/// The client end: encodes with its own compression context and decodes the
/// server's frames with another, like a real peer.
struct Client {
    io: DuplexStream,
    codec: Codec,
    rbuf: BytesMut,
}

impl Client {
    async fn send(&mut self, frame: Frame) {
        let mut buf = BytesMut::new();
        self.codec.encode(frame, &mut buf).unwrap();
        self.io.write_all(&buf).await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// Next frame from the server, `None` at EOF. Fails the test after 5 s.
    async fn recv(&mut self) -> Option<Frame> {
        timeout(STEP, async {
            loop {
                if let Some(frame) = self.codec.decode(&mut self.rbuf).unwrap() {
                    return Some(frame);
                }
                if self.io.read_buf(&mut self.rbuf).await.unwrap() == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("timed out waiting for a frame")
    }

    async fn expect(&mut self) -> Frame {
        self.recv().await.expect("unexpected EOF")
    }

    /// Opens a stream the way spdystream's CreateStream does.
    async fn open(&mut self, stream_id: u32, headers: Headers) {
        self.send(Frame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        })
        .await;
    }

    async fn open_exec(&mut self, stream_id: u32, stream_type: &str) {
        // Go's http.Header canonicalizes to "Streamtype"; spdystream
        // lowercases on the wire. Send it mixed-case to cover both.
        self.open(stream_id, Headers::new().with("streamType", stream_type))
            .await;
    }

    async fn expect_reply(&mut self, id: u32) {
        match self.expect().await {
            Frame::SynReply {
                stream_id,
                fin: false,
                headers,
            } if stream_id == id => assert!(headers.is_empty()),
            other => panic!("expected SYN_REPLY for {id}, got {other:?}"),
        }
    }

    async fn data(&mut self, stream_id: u32, data: &'static [u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            fin,
            data: Bytes::from_static(data),
        })
        .await;
    }

    /// Collects DATA for `id` until its FIN, skipping WINDOW_UPDATEs.
    async fn read_to_fin(&mut self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.expect().await {
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } if stream_id == id => {
                    out.extend_from_slice(&data);
                    if fin {
                        return out;
                    }
                }
                Frame::WindowUpdate { .. } => {}
                other => panic!("expected DATA on {id}, got {other:?}"),
            }
        }
    }
}

fn pair(config: Config) -> (Session, Client) {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let session = Session::with_config(server_io, config);
    let client = Client {
        io: client_io,
        codec: Codec::new(),
        rbuf: BytesMut::new(),
    };
    (session, client)
}

async fn accept(session: &mut Session) -> spdy::Stream {
    timeout(STEP, session.accept())
        .await
        .expect("timed out accepting")
        .expect("session ended")
}

async fn recv_all(stream: &mut spdy::Stream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = timeout(STEP, stream.recv()).await.expect("recv timed out") {
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn exec_flow_like_kube_apiserver() {
    let (mut session, mut client) = pair(Config::default());

    // kubectl/apiserver open error, stdin, stdout in that order and wait for
    // each SYN_REPLY.
    client.open_exec(1, kube::STREAM_TYPE_ERROR).await;
    client.open_exec(3, kube::STREAM_TYPE_STDIN).await;
    client.open_exec(5, kube::STREAM_TYPE_STDOUT).await;
    for id in [1, 3, 5] {
        client.expect_reply(id).await;
    }

    let mut error = accept(&mut session).await;
    let mut stdin = accept(&mut session).await;
    let mut stdout = accept(&mut session).await;
    assert_eq!((error.id(), stdin.id(), stdout.id()), (1, 3, 5));
    assert_eq!(error.stream_type(), Some("error"));
    assert_eq!(stdin.stream_type(), Some("stdin"));
    assert_eq!(stdout.headers().get("StreamType"), Some("stdout"));

    // stdin data then FIN, read on the server side.
    client.data(3, b"echo ", false).await;
    client.data(3, b"hello", false).await;
    client.data(3, b"", true).await;
    assert_eq!(recv_all(&mut stdin).await, b"echo hello");

    // stdout from the server, then FIN.
    stdout.send(Bytes::from_static(b"hello\n")).await.unwrap();
    stdout.close().await.unwrap();
    assert_eq!(client.read_to_fin(5).await, b"hello\n");

    // Status on the error stream, then FIN (v4 protocol: JSON Status).
    let status = br#"{"metadata":{},"status":"Success"}"#;
    error.send(Bytes::from_static(status)).await.unwrap();
    error.close().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, status);

    // kubelet closes the connection when the command is done. stdin was
    // never half-closed by us, so it is reset; then GOAWAY and EOF.
    session.close().await.unwrap();
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::CANCEL
        }
    );
    assert_eq!(
        client.expect().await,
        Frame::GoAway {
            last_good_stream_id: 5,
            status: GoAwayStatus::OK
        }
    );
    assert_eq!(client.recv().await, None);
    assert!(session.is_closed());
    assert!(matches!(
        stdout.send(Bytes::from_static(b"late")).await,
        Err(Error::StreamClosed)
    ));
    assert!(matches!(
        stdin.send(Bytes::from_static(b"late")).await,
        Err(Error::StreamReset(_))
    ));
}

#[tokio::test]
async fn data_sent_before_close_goes_out_before_reset_and_goaway() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdout").await;
    client.expect_reply(1).await;
    let mut stdout = accept(&mut session).await;
    stdout.send(Bytes::from(vec![7u8; 100_000])).await.unwrap();
    // No FIN: close() must still deliver the queued data first.
    let closing = tokio::spawn(async move { session.close().await });
    let mut got = 0;
    loop {
        match client.expect().await {
            Frame::Data {
                stream_id: 1, data, ..
            } => got += data.len(),
            Frame::RstStream { stream_id: 1, .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, 100_000);
    assert!(matches!(client.expect().await, Frame::GoAway { .. }));
    assert_eq!(client.recv().await, None);
    closing.await.unwrap().unwrap();
}

#[tokio::test]
async fn ping_is_echoed() {
    let (_session, mut client) = pair(Config::default());
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 1 });
    // Even ids are server-initiated pings' replies: not echoed.
    client.send(Frame::Ping { id: 2 }).await;
    client.send(Frame::Ping { id: 0x7fff_ffff }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 0x7fff_ffff });
}

#[tokio::test]
async fn rst_stream_from_peer_ends_the_stream() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    let mut stream = accept(&mut session).await;
    client.data(1, b"buffered but aborted", false).await;
    client
        .send(Frame::RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL,
        })
        .await;
    // The DATA may or may not be delivered before the reset is processed;
    // either way the stream then ends, reporting the reset.
    let got = recv_all(&mut stream).await;
    assert!(got.is_empty() || got == b"buffered but aborted", "{got:?}");
    assert!(stream.is_reset());
    assert_eq!(stream.reset_status(), Some(RstStatus::CANCEL));
    assert!(matches!(
        stream.send(Bytes::from_static(b"x")).await,
        Err(Error::StreamReset(RstStatus::CANCEL))
    ));
    // No RST echoed back for a stream the peer reset; the session is alive.
    drop(stream);
    client.send(Frame::Ping { id: 3 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 3 });
}

#[tokio::test]
async fn local_reset_and_drop_send_rst_stream() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdout").await;
    client.open_exec(3, "resize").await;
    client.expect_reply(1).await;
    client.expect_reply(3).await;
    let a = accept(&mut session).await;
    let b = accept(&mut session).await;
    a.reset_with(RstStatus::INTERNAL_ERROR);
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 1,
            status: RstStatus::INTERNAL_ERROR
        }
    );
    // Dropping a stream that was neither closed nor reset cancels it, so
    // the peer does not wait forever.
    drop(b);
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::CANCEL
        }
    );
    drop(a); // already reset: nothing more is sent
    client.send(Frame::Ping { id: 5 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 5 });
}

#[tokio::test]
async fn goaway_from_peer_ends_the_session_once_streams_finish() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdout").await;
    client.expect_reply(1).await;
    let mut stream = accept(&mut session).await;

    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK,
        })
        .await;
    assert!(timeout(STEP, session.accept()).await.unwrap().is_none());
    // A stream opened after GOAWAY is refused.
    client.open_exec(3, "stdin").await;
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::REFUSED_STREAM
        }
    );
    // The open stream still works both ways.
    stream.send(Bytes::from_static(b"bye")).await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"bye");
    client.data(1, b"", true).await;
    assert_eq!(recv_all(&mut stream).await, b"");
    // Both sides finished: the session ends on its own.
    timeout(STEP, session.closed()).await.unwrap().unwrap();
    assert_eq!(client.recv().await, None);
}

#[tokio::test]
async fn local_goaway_refuses_new_streams() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdout").await;
    client.expect_reply(1).await;
    let mut stream = accept(&mut session).await;
    session.goaway();
    assert_eq!(
        client.expect().await,
        Frame::GoAway {
            last_good_stream_id: 1,
            status: GoAwayStatus::OK
        }
    );
    assert!(timeout(STEP, session.accept()).await.unwrap().is_none());
    client.open_exec(3, "stdin").await;
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::REFUSED_STREAM
        }
    );
    client.data(1, b"in", true).await;
    assert_eq!(recv_all(&mut stream).await, b"in");
    stream.close().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"");
    timeout(STEP, session.closed()).await.unwrap().unwrap();
}

#[tokio::test]
async fn peer_eof_ends_the_session_cleanly() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    let mut stream = accept(&mut session).await;
    client.data(1, b"partial", false).await;
    // Let the session read the DATA before the connection goes away.
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 1 });
    drop(client);
    // Buffered data is still delivered, then EOF.
    assert_eq!(recv_all(&mut stream).await, b"partial");
    timeout(STEP, session.closed()).await.unwrap().unwrap();
    assert!(session.accept().await.is_none());
    assert!(matches!(
        stream.send(Bytes::from_static(b"x")).await,
        Err(Error::SessionClosed)
    ));
}

#[tokio::test]
async fn interleaves_streams_in_both_directions() {
    let config = Config {
        // One queued frame at a time makes the writers take turns.
        write_queue: 1,
        ..Config::default()
    };
    let (mut session, mut client) = pair(config);
    client.open_exec(1, "stdout").await;
    client.open_exec(3, "stderr").await;
    client.expect_reply(1).await;
    client.expect_reply(3).await;
    let mut out = accept(&mut session).await;
    let mut err = accept(&mut session).await;

    let payload = |b: u8| Bytes::from(vec![b; 256 * 1024]);
    let w1 = tokio::spawn(async move {
        out.send(payload(b'o')).await.unwrap();
        out.close().await.unwrap();
        out
    });
    let w2 = tokio::spawn(async move {
        err.send(payload(b'e')).await.unwrap();
        err.close().await.unwrap();
        err
    });

    let mut order = Vec::new();
    let mut totals = [0usize; 2];
    let mut fins = 0;
    while fins < 2 {
        match client.expect().await {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                assert!(data.len() <= 32 * 1024, "frame of {} bytes", data.len());
                let (idx, byte) = if stream_id == 1 { (0, b'o') } else { (1, b'e') };
                assert!(data.iter().all(|b| *b == byte));
                totals[idx] += data.len();
                if !data.is_empty() {
                    order.push(stream_id);
                }
                fins += usize::from(fin);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(totals, [256 * 1024, 256 * 1024]);
    let first_err = order.iter().position(|&id| id == 3).unwrap();
    let last_out = order.iter().rposition(|&id| id == 1).unwrap();
    assert!(first_err < last_out, "streams not interleaved: {order:?}");

    // Client to server: alternate frames for the two streams.
    let mut out = w1.await.unwrap();
    let mut err = w2.await.unwrap();
    for _ in 0..4 {
        client.data(1, b"o1", false).await;
        client.data(3, b"e3", false).await;
    }
    client.data(1, b"", true).await;
    client.data(3, b"", true).await;
    assert_eq!(recv_all(&mut out).await, b"o1o1o1o1");
    assert_eq!(recv_all(&mut err).await, b"e3e3e3e3");
}

#[tokio::test]
async fn slow_reader_applies_back_pressure_and_window_updates_follow_reads() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    let mut stdin = accept(&mut session).await;

    // 2 MiB is far more than the 64 KiB stream buffer plus the 64 KiB pipe:
    // a spdystream peer ignores windows, so only TCP back-pressure stops it.
    let (mut rd, mut wr) = tokio::io::split(client.io);
    let writer = tokio::spawn(async move {
        let mut codec = Codec::new();
        let mut buf = BytesMut::new();
        for _ in 0..64 {
            codec
                .encode(
                    Frame::Data {
                        stream_id: 1,
                        fin: false,
                        data: Bytes::from(vec![1u8; 32 * 1024]),
                    },
                    &mut buf,
                )
                .unwrap();
            wr.write_all(&buf.split()).await.unwrap();
        }
        codec
            .encode(
                Frame::Data {
                    stream_id: 1,
                    fin: true,
                    data: Bytes::new(),
                },
                &mut buf,
            )
            .unwrap();
        wr.write_all(&buf).await.unwrap();
        wr
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "the session should stop reading");

    let mut total = 0;
    while let Some(chunk) = timeout(STEP, stdin.recv()).await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, 2 * 1024 * 1024);
    let mut wr = writer.await.unwrap();

    // Consumption was announced with WINDOW_UPDATEs. A PING after the reads
    // marks the end: its echo is queued behind them.
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    codec.encode(Frame::Ping { id: 1 }, &mut buf).unwrap();
    wr.write_all(&buf).await.unwrap();
    let mut rbuf = BytesMut::new();
    let mut acked = 0u64;
    loop {
        let frame = timeout(STEP, async {
            loop {
                if let Some(f) = codec.decode(&mut rbuf).unwrap() {
                    return f;
                }
                assert!(rd.read_buf(&mut rbuf).await.unwrap() > 0, "EOF");
            }
        })
        .await
        .expect("frame expected");
        match frame {
            Frame::WindowUpdate {
                stream_id: 1,
                delta_window_size,
            } => acked += u64::from(delta_window_size),
            Frame::Ping { id: 1 } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Consumption is acknowledged as it happens. The tail is not: once the
    // peer sent FIN no window is needed, and how much was still buffered at
    // that point depends on scheduling.
    assert!(acked >= 1024 * 1024, "only {acked} bytes acknowledged");
    assert!(acked <= 2 * 1024 * 1024, "{acked} bytes acknowledged");
}

#[tokio::test]
async fn async_read_write_echo() {
    let (mut session, mut client) = pair(Config::default());
    client
        .open(
            1,
            Headers::new()
                .with(kube::HEADER_STREAM_TYPE, kube::STREAM_TYPE_DATA)
                .with(kube::HEADER_PORT, "80")
                .with(kube::HEADER_REQUEST_ID, "0"),
        )
        .await;
    client.expect_reply(1).await;
    let stream = accept(&mut session).await;
    assert_eq!(stream.headers().get("port"), Some("80"));
    let (mut rx, mut tx) = stream.into_split();
    let echo = tokio::spawn(async move {
        let n = tokio::io::copy(&mut rx, &mut tx).await.unwrap();
        tx.shutdown().await.unwrap();
        n
    });
    let big: &'static [u8] = Box::leak(vec![9u8; 100_000].into_boxed_slice());
    client.data(1, b"ping ", false).await;
    client.data(1, big, false).await;
    client.data(1, b"", true).await;
    let echoed = client.read_to_fin(1).await;
    assert_eq!(echoed.len(), 5 + 100_000);
    assert!(echoed.starts_with(b"ping "));
    assert_eq!(echo.await.unwrap(), 100_005);
}

#[tokio::test]
async fn syn_stream_with_fin_has_no_data() {
    let (mut session, mut client) = pair(Config::default());
    client
        .send(Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: true,
            unidirectional: false,
            headers: Headers::new().with("streamtype", "error"),
        })
        .await;
    client.expect_reply(1).await;
    let mut stream = accept(&mut session).await;
    assert_eq!(timeout(STEP, stream.recv()).await.unwrap(), None);
    stream.send(Bytes::from_static(b"status")).await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"status");
}

#[tokio::test]
async fn invalid_stream_ids_are_refused() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(2, "stdin").await; // even: server-side id
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 2,
            status: RstStatus::PROTOCOL_ERROR
        }
    );
    client.open_exec(5, "stdin").await;
    client.expect_reply(5).await;
    client.open_exec(3, "stdin").await; // not increasing
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::PROTOCOL_ERROR
        }
    );
    assert_eq!(accept(&mut session).await.id(), 5);
}

#[tokio::test]
async fn too_many_streams_are_refused() {
    let config = Config {
        max_concurrent_streams: 1,
        ..Config::default()
    };
    let (mut session, mut client) = pair(config);
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    client.open_exec(3, "stdout").await;
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::REFUSED_STREAM
        }
    );
    let _first = accept(&mut session).await;
}

#[tokio::test]
async fn protocol_error_sends_goaway_and_fails_the_session() {
    let (mut session, mut client) = pair(Config::default());
    // A SPDY/2 PING.
    client
        .send_raw(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1])
        .await;
    assert_eq!(
        client.expect().await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::PROTOCOL_ERROR
        }
    );
    assert_eq!(client.recv().await, None);
    let err = timeout(STEP, session.closed()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Frame(FrameError::UnsupportedVersion(2))),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_frame_fails_the_session() {
    let config = Config {
        max_frame_size: 64 * 1024,
        ..Config::default()
    };
    let (mut session, mut client) = pair(config);
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    // Header of a 1 MiB DATA frame; the payload never needs to arrive.
    client.send_raw(&[0, 0, 0, 1, 0, 0x10, 0x00, 0x00]).await;
    assert!(matches!(
        client.expect().await,
        Frame::GoAway {
            status: GoAwayStatus::PROTOCOL_ERROR,
            ..
        }
    ));
    let err = timeout(STEP, session.closed()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Frame(FrameError::TooLarge { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_frames_and_flow_control_frames_are_tolerated() {
    let (mut session, mut client) = pair(Config::default());
    client
        .send_raw(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 0xde, 0xad])
        .await;
    client
        .send(Frame::Settings {
            clear_settings: false,
            settings: vec![spdy::frame::Setting {
                flags: 0,
                id: spdy::frame::Setting::INITIAL_WINDOW_SIZE,
                value: 1024,
            }],
        })
        .await;
    client.open_exec(1, "stdout").await;
    client.expect_reply(1).await;
    client
        .send(Frame::WindowUpdate {
            stream_id: 1,
            delta_window_size: 1,
        })
        .await;
    let mut stream = accept(&mut session).await;
    // The 1 KiB window is not enforced (spdystream never sends
    // WINDOW_UPDATE), so 100 KiB flows without any.
    stream
        .send(Bytes::from(vec![0u8; 100 * 1024]))
        .await
        .unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.read_to_fin(1).await.len(), 100 * 1024);
}

#[tokio::test]
async fn dropping_the_session_sends_goaway_and_keeps_open_streams() {
    let (mut session, mut client) = pair(Config::default());
    client.open_exec(1, "stdout").await;
    client.expect_reply(1).await;
    let mut stream = accept(&mut session).await;
    drop(session);
    assert!(matches!(client.expect().await, Frame::GoAway { .. }));
    stream
        .send(Bytes::from_static(b"still here"))
        .await
        .unwrap();
    stream.close().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"still here");
    client.data(1, b"", true).await;
    assert_eq!(
        client.recv().await,
        None,
        "connection ends after the last stream"
    );
}

#[tokio::test]
async fn unspawned_connection_is_driven_by_the_caller() {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let (mut session, connection) = Session::unspawned(server_io, Config::default());
    let mut client = Client {
        io: client_io,
        codec: Codec::new(),
        rbuf: BytesMut::new(),
    };
    let driver = tokio::spawn(connection);
    client.send(Frame::Ping { id: 9 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 9 });
    session.close().await.unwrap();
    driver.await.unwrap().unwrap();
}

/// A raw header block of one name whose value is `n` NUL-joined parts: `n`
/// entries once decoded. The encoder refuses NULs, so it is built by hand.
fn block_of_entries(n: usize) -> Vec<u8> {
    let value = vec!["v"; n].join("\0");
    let mut raw = Vec::new();
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(b"n");
    raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
    raw.extend_from_slice(value.as_bytes());
    raw
}

/// A SYN_STREAM (`frame_type` 1) or HEADERS (8) frame around `raw`,
/// compressed with the client's own context so later frames stay in step.
fn frame_with_block(client: &mut Client, frame_type: u8, stream_id: u32, raw: &[u8]) -> Vec<u8> {
    let block = client.codec.compress_header_block(raw).unwrap();
    let ids: &[u8] = if frame_type == 1 {
        &[0, 0, 0, 0, 0, 0]
    } else {
        &[]
    };
    let len = 4 + ids.len() + block.len();
    let mut wire = vec![0x80, 0x03, 0x00, frame_type];
    wire.extend_from_slice(&(len as u32).to_be_bytes());
    wire.extend_from_slice(&stream_id.to_be_bytes());
    wire.extend_from_slice(ids);
    wire.extend_from_slice(&block);
    wire
}

#[tokio::test]
async fn header_block_over_a_limit_resets_only_that_stream() {
    let (mut session, mut client) = pair(Config::default());
    let wire = frame_with_block(&mut client, 1, 1, &block_of_entries(65));
    client.send_raw(&wire).await;
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 1,
            status: RstStatus::FRAME_TOO_LARGE
        }
    );
    // The session goes on: the next stream opens normally.
    client.open_exec(3, "stdin").await;
    client.expect_reply(3).await;
    let stream = accept(&mut session).await;
    assert_eq!(stream.id(), 3);

    // HEADERS over the limit on an open stream resets that stream.
    let wire = frame_with_block(&mut client, 8, 3, &block_of_entries(65));
    client.send_raw(&wire).await;
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus::FRAME_TOO_LARGE
        }
    );
    assert_eq!(stream.reset_status(), Some(RstStatus::FRAME_TOO_LARGE));
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 1 });
}

#[tokio::test]
async fn header_block_over_the_size_cap_ends_the_session() {
    let (mut session, mut client) = pair(Config::default());
    // One value of 256 KiB: twice the cap, a few hundred bytes compressed.
    let mut raw = Vec::new();
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(b"n");
    raw.extend_from_slice(&(256u32 << 10).to_be_bytes());
    raw.resize(raw.len() + (256 << 10), b'x');
    let wire = frame_with_block(&mut client, 1, 1, &raw);
    assert!(wire.len() < 4096, "{}", wire.len());
    client.send_raw(&wire).await;
    // SPDY/3.1: FRAME_TOO_LARGE for the stream, then close the session
    // since the block was not decompressed whole.
    assert_eq!(
        client.expect().await,
        Frame::RstStream {
            stream_id: 1,
            status: RstStatus::FRAME_TOO_LARGE
        }
    );
    assert_eq!(
        client.expect().await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::PROTOCOL_ERROR
        }
    );
    assert_eq!(client.recv().await, None);
    let err = timeout(STEP, session.closed()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Frame(FrameError::HeaderLimit {
                stream_id: Some(1),
                limit: spdy::HeaderLimit::BlockSize
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn session_receive_budget_bounds_buffering_across_streams() {
    // The session budget is raised to one frame plus overhead (~1 KiB), far
    // below the two 64 KiB stream buffers.
    let config = Config {
        max_frame_size: 1024,
        session_receive_buffer: 0,
        ..Config::default()
    };
    let (mut session, mut client) = pair(config);
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    client.open_exec(3, "resize").await;
    client.expect_reply(3).await;
    let mut first = accept(&mut session).await;
    let mut second = accept(&mut session).await;

    let send = |id: u32, n: usize| Frame::Data {
        stream_id: id,
        fin: false,
        data: Bytes::from(vec![b'a'; n]),
    };
    client.send(send(1, 1000)).await;
    client.send(send(3, 100)).await;
    client.send(Frame::Ping { id: 1 }).await;
    // Stream 3's frame does not fit next to stream 1's, so the reader waits
    // and the PING behind it is not answered yet.
    assert!(
        timeout(Duration::from_millis(300), client.recv())
            .await
            .is_err(),
        "the session should stop reading while its budget is used up"
    );
    assert_eq!(
        timeout(STEP, first.recv()).await.unwrap().unwrap().len(),
        1000
    );
    assert_eq!(client.expect().await, Frame::Ping { id: 1 });
    assert_eq!(
        timeout(STEP, second.recv()).await.unwrap().unwrap().len(),
        100
    );
}

#[tokio::test]
async fn tiny_frames_are_charged_more_than_their_payload() {
    // 16 one-byte frames are 16 bytes of payload, but each buffered frame
    // costs real memory too: they must not all fit a 1 KiB buffer.
    let config = Config {
        stream_receive_buffer: 1024,
        send_window_updates: false,
        ..Config::default()
    };
    let (mut session, mut client) = pair(config);
    client.open_exec(1, "stdin").await;
    client.expect_reply(1).await;
    let mut stdin = accept(&mut session).await;
    for _ in 0..16 {
        client.data(1, b"x", false).await;
    }
    client.send(Frame::Ping { id: 1 }).await;
    assert!(
        timeout(Duration::from_millis(300), client.recv())
            .await
            .is_err(),
        "16 tiny frames should fill a 1 KiB stream buffer"
    );
    let mut got = 0;
    while got < 16 {
        got += timeout(STEP, stdin.recv()).await.unwrap().unwrap().len();
    }
    assert_eq!(client.expect().await, Frame::Ping { id: 1 });
}

#[test]
fn default_config_uses_the_documented_limits() {
    let config = Config::default();
    assert_eq!(
        config.max_concurrent_streams,
        spdy::session::DEFAULT_MAX_CONCURRENT_STREAMS
    );
    assert_eq!(
        config.stream_receive_buffer,
        spdy::session::DEFAULT_STREAM_RECEIVE_BUFFER
    );
    assert_eq!(
        config.session_receive_buffer,
        spdy::session::DEFAULT_SESSION_RECEIVE_BUFFER
    );
    assert_eq!(config.max_frame_size, spdy::frame::DEFAULT_MAX_FRAME_SIZE);
}
