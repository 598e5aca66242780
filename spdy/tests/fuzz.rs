//! Fuzzing on the stable toolchain: property tests that feed hostile input to
//! the frame decoder, the header-block parser (raw and compressed) and a
//! whole session, asserting that nothing panics or hangs and that whatever
//! is accepted keeps to the limits in `spdy::frame` and `spdy::session`.
//!
//! CI runs `PROPTEST_CASES` cases per property (256 unless set); long runs
//! use `scripts/fuzz.sh`. A failing case proptest finds is saved under
//! `spdy/proptest-regressions/` and replayed first on every run; each one
//! fixed also gets a named test at the bottom of this file.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use spdy::frame::{
    MAX_HEADER_BLOCK_SIZE, MAX_HEADER_BYTES, MAX_HEADER_ENTRIES, parse_header_block,
};
use spdy::{Codec, Config, Frame, FrameError, HeaderLimit, Headers, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// Cases per property: `PROPTEST_CASES`, else 256 (what CI runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Where failing cases are kept. proptest's default looks for `lib.rs`
/// next to the test file, which an integration test has not.
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz.txt");

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    }
}

/// A session case costs a runtime and a few tasks: a quarter of the cases.
fn session_config() -> ProptestConfig {
    ProptestConfig {
        cases: (cases() / 4).max(16),
        ..config()
    }
}

// ---- limit checks ----------------------------------------------------------

fn headers_within_limits(headers: &Headers) -> Result<(), TestCaseError> {
    prop_assert!(
        headers.len() <= MAX_HEADER_ENTRIES,
        "{} entries",
        headers.len()
    );
    let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    prop_assert!(bytes <= MAX_HEADER_BYTES, "{bytes} header bytes");
    Ok(())
}

fn frame_within_limits(frame: &Frame, max_frame_size: usize) -> Result<(), TestCaseError> {
    match frame {
        Frame::SynStream {
            stream_id, headers, ..
        }
        | Frame::SynReply {
            stream_id, headers, ..
        }
        | Frame::Headers {
            stream_id, headers, ..
        } => {
            prop_assert!(*stream_id != 0 && *stream_id <= 0x7fff_ffff);
            headers_within_limits(headers)?;
        }
        Frame::Data {
            stream_id, data, ..
        } => {
            prop_assert!(*stream_id != 0 && *stream_id <= 0x7fff_ffff);
            prop_assert!(data.len() <= max_frame_size);
        }
        Frame::Settings { settings, .. } => {
            prop_assert!(settings.len() * 8 + 4 <= max_frame_size);
        }
        Frame::RstStream { stream_id, .. } => prop_assert!(*stream_id != 0),
        Frame::Ping { .. } | Frame::GoAway { .. } | Frame::WindowUpdate { .. } => {}
    }
    Ok(())
}

/// Decodes everything in `input`, fed in pieces of the given sizes (cycled),
/// checking each frame. Stops at the first error, except a header-limit
/// refusal that leaves the codec in step, after which decoding goes on as a
/// session would.
fn decode_stream(codec: &mut Codec, input: &[u8], pieces: &[usize]) -> Result<(), TestCaseError> {
    let max = codec.max_frame_size();
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut piece = pieces.iter().copied().cycle();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => frame_within_limits(&frame, max)?,
            Ok(None) => {
                // Not even the length field may make it buffer ahead.
                prop_assert!(buf.len() <= max + 8);
                if rest.is_empty() {
                    return Ok(());
                }
                let n = piece.next().unwrap_or(rest.len()).clamp(1, rest.len());
                buf.put_slice(&rest[..n]);
                rest = &rest[n..];
            }
            Err(FrameError::HeaderLimit {
                stream_id: Some(_),
                limit,
            }) if limit.compression_in_sync() => {}
            Err(_) => return Ok(()),
        }
    }
}

// ---- structured input ------------------------------------------------------

/// One name/value pair of a raw header block; the value's parts are joined
/// with NUL on the wire.
#[derive(Clone, Debug)]
struct Pair {
    name: String,
    parts: Vec<String>,
}

/// A raw header block, possibly lying about its pair count.
#[derive(Clone, Debug)]
struct RawBlock {
    pairs: Vec<Pair>,
    count_lie: Option<u32>,
}

impl RawBlock {
    fn bytes(&self) -> Vec<u8> {
        let mut raw = Vec::new();
        let count = self.count_lie.unwrap_or(self.pairs.len() as u32);
        raw.put_u32(count);
        for pair in &self.pairs {
            raw.put_u32(pair.name.len() as u32);
            raw.put_slice(pair.name.as_bytes());
            let value = pair.parts.join("\0");
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        raw
    }
}

/// What parsing a block without a count lie must give: the parser's rules
/// restated, checked in the same order.
#[derive(Debug, PartialEq)]
enum Expected {
    Entries(Vec<(String, String)>),
    Refused(HeaderLimit),
    Malformed,
}

fn expected(block: &RawBlock, raw_len: usize) -> Expected {
    if raw_len > MAX_HEADER_BLOCK_SIZE {
        return Expected::Refused(HeaderLimit::BlockSize);
    }
    if block.pairs.len() > MAX_HEADER_ENTRIES {
        return Expected::Refused(HeaderLimit::Entries);
    }
    let mut entries = Vec::new();
    let mut bytes = 0;
    for pair in &block.pairs {
        if pair.name.is_empty() {
            return Expected::Malformed;
        }
        let name = pair.name.to_ascii_lowercase();
        for part in &pair.parts {
            if entries.len() >= MAX_HEADER_ENTRIES {
                return Expected::Refused(HeaderLimit::Entries);
            }
            bytes += name.len() + part.len();
            if bytes > MAX_HEADER_BYTES {
                return Expected::Refused(HeaderLimit::Bytes);
            }
            entries.push((name.clone(), part.clone()));
        }
    }
    Expected::Entries(entries)
}

fn outcome(result: Result<Headers, FrameError>) -> Expected {
    match result {
        Ok(headers) => Expected::Entries(
            headers
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        ),
        Err(FrameError::HeaderLimit { limit, .. }) => Expected::Refused(limit),
        Err(_) => Expected::Malformed,
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9-]{0,12}",
        1 => (1usize..6000).prop_map(|n| "n".repeat(n)),
    ]
}

fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[ -~]{0,8}".prop_map(|s| s.replace('\0', "")),
        1 => "\\PC{0,4}".prop_map(|s| s.replace('\0', "")),
        1 => (0usize..40_000).prop_map(|n| "v".repeat(n)),
    ]
}

fn pair() -> impl Strategy<Value = Pair> {
    let parts = prop_oneof![
        8 => prop::collection::vec(part(), 1..4),
        // Many NUL-separated parts: the bomb's shape.
        1 => (1usize..300).prop_map(|n| vec![String::new(); n]),
    ];
    (name(), parts).prop_map(|(name, parts)| Pair { name, parts })
}

/// `total` split into `k` near-equal non-empty shares.
fn shares(total: usize, k: usize) -> Vec<usize> {
    (0..k)
        .map(|i| total / k + usize::from(i < total % k))
        .collect()
}

/// Blocks within two of the entry limit or the byte limit, either side:
/// random blocks almost never land on an off-by-one.
fn boundary_pairs() -> impl Strategy<Value = Vec<Pair>> {
    let entries =
        (MAX_HEADER_ENTRIES - 2..=MAX_HEADER_ENTRIES + 2, 1usize..4).prop_map(|(n, k)| {
            shares(n, k)
                .into_iter()
                .enumerate()
                .map(|(i, parts)| Pair {
                    name: format!("h{i}"),
                    parts: vec!["v".to_owned(); parts],
                })
                .collect()
        });
    let bytes = (
        MAX_HEADER_BYTES - 2..=MAX_HEADER_BYTES + 2,
        1usize..4,
        "[a-z]{1,8}",
    )
        .prop_map(|(total, k, name)| {
            let values = total - k * name.len();
            vec![Pair {
                parts: shares(values, k)
                    .into_iter()
                    .map(|n| "v".repeat(n))
                    .collect(),
                name,
            }]
        });
    prop_oneof![entries, bytes]
}

fn raw_block() -> impl Strategy<Value = RawBlock> {
    let pairs = prop_oneof![
        6 => prop::collection::vec(pair(), 0..6),
        1 => prop::collection::vec(pair(), 60..70),
        2 => boundary_pairs(),
    ];
    let lie = prop_oneof![8 => Just(None), 1 => any::<u32>().prop_map(Some)];
    (pairs, lie).prop_map(|(pairs, count_lie)| RawBlock { pairs, count_lie })
}

/// A frame as raw material: mostly well-formed, with lies and corruption
/// mixed in.
#[derive(Clone, Debug)]
enum FrameSpec {
    Data {
        stream_id: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    Control {
        version: u16,
        frame_type: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    /// SYN_STREAM (1), SYN_REPLY (2) or HEADERS (8) around a block
    /// compressed by the peer's context, optionally with one byte flipped.
    WithHeaders {
        frame_type: u16,
        stream_id: u32,
        flags: u8,
        block: RawBlock,
        flip: Option<(usize, u8)>,
    },
    /// A frame header whose length field says something else than what
    /// follows.
    LengthLie {
        first: u32,
        flags: u8,
        length: u32,
        payload: Vec<u8>,
    },
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let payload = || prop::collection::vec(any::<u8>(), 0..64);
    let stream_id = || prop_oneof![4 => 1u32..16, 1 => any::<u32>()];
    prop_oneof![
        3 => (stream_id(), any::<u8>(), payload()).prop_map(|(stream_id, flags, payload)| {
            FrameSpec::Data { stream_id, flags, payload }
        }),
        3 => (
            prop_oneof![8 => Just(3u16), 1 => any::<u16>()],
            prop_oneof![8 => 1u16..12, 1 => any::<u16>()],
            any::<u8>(),
            payload(),
        )
            .prop_map(|(version, frame_type, flags, payload)| FrameSpec::Control {
                version,
                frame_type,
                flags,
                payload,
            }),
        4 => (
            prop_oneof![Just(1u16), Just(2u16), Just(8u16)],
            stream_id(),
            any::<u8>(),
            raw_block(),
            prop_oneof![6 => Just(None), 1 => (any::<usize>(), any::<u8>()).prop_map(Some)],
        )
            .prop_map(|(frame_type, stream_id, flags, block, flip)| FrameSpec::WithHeaders {
                frame_type,
                stream_id,
                flags,
                block,
                flip,
            }),
        1 => (any::<u32>(), any::<u8>(), 0u32..(1 << 24), payload()).prop_map(
            |(first, flags, length, payload)| FrameSpec::LengthLie {
                first,
                flags,
                length,
                payload,
            }
        ),
    ]
}

fn put_header(wire: &mut Vec<u8>, first: u32, flags: u8, len: usize) {
    wire.put_u32(first);
    wire.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Serializes frames as a peer would, header blocks through one compression
/// context (`peer`) so they stay in step unless a spec corrupts them.
fn serialize(specs: &[FrameSpec], peer: &mut Codec) -> Vec<u8> {
    let mut wire = Vec::new();
    for spec in specs {
        match spec {
            FrameSpec::Data {
                stream_id,
                flags,
                payload,
            } => {
                put_header(&mut wire, stream_id & 0x7fff_ffff, *flags, payload.len());
                wire.put_slice(payload);
            }
            FrameSpec::Control {
                version,
                frame_type,
                flags,
                payload,
            } => {
                let first = 0x8000_0000 | (u32::from(version & 0x7fff) << 16);
                put_header(
                    &mut wire,
                    first | u32::from(*frame_type),
                    *flags,
                    payload.len(),
                );
                wire.put_slice(payload);
            }
            FrameSpec::WithHeaders {
                frame_type,
                stream_id,
                flags,
                block,
                flip,
            } => {
                let Ok(mut compressed) = peer.compress_header_block(&block.bytes()) else {
                    continue;
                };
                if let Some((at, xor)) = flip {
                    if !compressed.is_empty() {
                        let at = at % compressed.len();
                        compressed[at] ^= xor;
                    }
                }
                let mut payload = Vec::new();
                payload.put_u32(*stream_id);
                if *frame_type == 1 {
                    payload.put_slice(&[0, 0, 0, 0, 0, 0]);
                }
                payload.extend_from_slice(&compressed);
                put_header(
                    &mut wire,
                    0x8003_0000 | u32::from(*frame_type),
                    *flags,
                    payload.len(),
                );
                wire.extend_from_slice(&payload);
            }
            FrameSpec::LengthLie {
                first,
                flags,
                length,
                payload,
            } => {
                wire.put_u32(*first);
                wire.put_u32((u32::from(*flags) << 24) | length);
                wire.put_slice(payload);
            }
        }
    }
    wire
}

// ---- properties ------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes, fed in arbitrary pieces, to decoders with the default
    /// and a small frame limit.
    #[test]
    fn decoder_survives_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..4096),
        pieces in prop::collection::vec(1usize..512, 1..8),
        small in any::<bool>(),
    ) {
        let mut codec = if small {
            Codec::new().with_max_frame_size(256)
        } else {
            Codec::new()
        };
        decode_stream(&mut codec, &input, &pieces)?;
    }

    /// Arbitrary bytes behind a valid frame header, so the body parsers
    /// (not just the framing) see them.
    #[test]
    fn decoder_survives_arbitrary_frame_bodies(
        frame_type in prop_oneof![1u16..=9, any::<u16>()],
        flags in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut wire = Vec::new();
        put_header(&mut wire, 0x8003_0000 | u32::from(frame_type), flags, body.len());
        wire.extend_from_slice(&body);
        decode_stream(&mut Codec::new(), &wire, &[wire.len()])?;
    }

    /// Sequences of mostly well-formed frames, header blocks from one peer
    /// compression context, fed in arbitrary pieces.
    #[test]
    fn decoder_survives_structured_frame_sequences(
        specs in prop::collection::vec(frame_spec(), 1..12),
        pieces in prop::collection::vec(1usize..4096, 1..8),
    ) {
        let wire = serialize(&specs, &mut Codec::new());
        decode_stream(&mut Codec::new(), &wire, &pieces)?;
    }

    /// Arbitrary bytes as a raw (decompressed) header block.
    #[test]
    fn raw_header_parser_survives_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        if let Ok(headers) = parse_header_block(&input) {
            headers_within_limits(&headers)?;
        }
    }

    /// Structured raw blocks: the parser gives exactly what its rules say,
    /// entries or the first limit broken.
    #[test]
    fn raw_header_parser_matches_its_rules(block in raw_block()) {
        let raw = block.bytes();
        let got = outcome(parse_header_block(&raw));
        if let Expected::Entries(entries) = &got {
            prop_assert!(entries.len() <= MAX_HEADER_ENTRIES);
        }
        if block.count_lie.is_none() {
            prop_assert_eq!(got, expected(&block, raw.len()));
        }
    }

    /// Arbitrary bytes as a compressed header block (the zlib header, the
    /// dictionary check and inflate all see garbage).
    #[test]
    fn compressed_header_parser_survives_arbitrary_bytes(
        input in prop::collection::vec(any::<u8>(), 0..2048),
        zlib_header in any::<bool>(),
    ) {
        let mut input = input;
        if zlib_header {
            // A real zlib header asking for the SPDY dictionary, so garbage
            // reaches inflate proper.
            let mut block = vec![0x78, 0xbb];
            block.extend_from_slice(&spdy::DICTIONARY_ID.to_be_bytes());
            block.extend_from_slice(&input);
            input = block;
        }
        if let Ok(headers) = Codec::new().decode_header_block(&input) {
            headers_within_limits(&headers)?;
        }
    }

    /// Structured blocks compressed by a peer context and decoded by ours,
    /// several in a row: same result as the raw parser, and a refusal that
    /// leaves the contexts in step does not disturb the next block.
    #[test]
    fn compressed_header_parser_matches_the_raw_parser(
        blocks in prop::collection::vec(raw_block(), 1..5),
    ) {
        let mut peer = Codec::new();
        let mut ours = Codec::new();
        for block in &blocks {
            let raw = block.bytes();
            let compressed = peer.compress_header_block(&raw).unwrap();
            let got = ours.decode_header_block(&compressed);
            let direct = parse_header_block(&raw);
            let out_of_step = matches!(
                &got,
                Err(FrameError::HeaderLimit { limit: HeaderLimit::BlockSize, .. })
            );
            prop_assert_eq!(outcome(got), outcome(direct));
            if out_of_step {
                break;
            }
        }
    }
}

proptest! {
    #![proptest_config(session_config())]

    /// Structured frame sequences (and arbitrary trailing bytes) into a whole
    /// session whose application accepts and reads every stream: the session
    /// ends when the peer hangs up, without panicking or hanging.
    #[test]
    fn session_survives_frame_sequences(
        specs in prop::collection::vec(frame_spec(), 0..16),
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut wire = serialize(&specs, &mut Codec::new());
        wire.extend_from_slice(&tail);
        run_session(wire)?;
    }
}

/// Runs a session over `wire` on a fresh runtime. The connection future is
/// driven here, so a panic in the session fails the case directly.
fn run_session(wire: Vec<u8>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let finished = rt.block_on(async move {
        let (server_io, client_io) = tokio::io::duplex(16 * 1024);
        let config = Config {
            close_timeout: Duration::from_millis(100),
            ..Config::default()
        };
        let (mut session, connection) = Session::unspawned(server_io, config);
        let app = tokio::spawn(async move {
            while let Some(mut stream) = session.accept().await {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {}
                    let _ = stream.close().await;
                });
            }
        });
        let (mut rd, mut wr) = tokio::io::split(client_io);
        let write = async move {
            let _ = wr.write_all(&wire).await;
            let _ = wr.shutdown().await;
        };
        // Read concurrently with writing: the session stops reading while
        // its replies are not read, like any peer would.
        let read = async move {
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let run = async {
            let (_, _, _outcome) = tokio::join!(write, read, connection);
        };
        let finished = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .is_ok();
        app.abort();
        finished
    });
    prop_assert!(finished, "session did not end after the peer hung up");
    Ok(())
}

// ---- regressions -----------------------------------------------------------
//
// Each case the fuzzer finds becomes a named test here, next to proptest's
// own record in spdy/proptest-regressions/fuzz.txt. None so far: see
// docs/RELIABILITY.md for the runs.
