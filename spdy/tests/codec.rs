//! Frame codec tests: wire layout, every frame type, header compression.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
use spdy::frame::{
    FLAG_FIN, FLAG_UNIDIRECTIONAL, MAX_HEADER_BLOCK_SIZE, MAX_HEADER_BYTES, MAX_HEADER_ENTRIES,
    Setting, parse_header_block,
};
use spdy::{
    Codec, DICTIONARY, DICTIONARY_ID, Frame, FrameError, GoAwayStatus, HeaderLimit, Headers,
    RstStatus,
};
use tokio_util::codec::{Decoder, Encoder};

fn encode(codec: &mut Codec, frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).expect("encode");
    buf
}

fn decode_all(codec: &mut Codec, mut buf: BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = codec.decode(&mut buf).expect("decode") {
        frames.push(f);
    }
    assert!(buf.is_empty(), "undecoded bytes left: {buf:?}");
    frames
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn exec_headers(stream_type: &str) -> Headers {
    Headers::new().with("streamType", stream_type)
}

#[test]
fn dictionary_is_the_spdy3_dictionary() {
    assert_eq!(DICTIONARY.len(), 1423);
    assert_eq!(adler32(DICTIONARY), DICTIONARY_ID);
    assert_eq!(DICTIONARY_ID, 0xe3c6_a7c2);
    assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
    assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
}

#[test]
fn every_frame_type_round_trips() {
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: exec_headers("error"),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_stream_id: 1,
            priority: 7,
            slot: 9,
            fin: true,
            unidirectional: true,
            headers: Headers::new()
                .with("streamtype", "data")
                .with("port", "8080")
                .with("requestid", "0"),
        },
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        },
        Frame::SynReply {
            stream_id: 3,
            fin: true,
            headers: Headers::new().with(":status", "200"),
        },
        Frame::RstStream {
            stream_id: 5,
            status: RstStatus::CANCEL,
        },
        Frame::Settings {
            clear_settings: true,
            settings: vec![
                Setting {
                    flags: Setting::FLAG_PERSIST_VALUE,
                    id: Setting::CURRENT_CWND,
                    value: 10,
                },
                Setting {
                    flags: 0,
                    id: Setting::INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                },
            ],
        },
        Frame::Settings {
            clear_settings: false,
            settings: vec![],
        },
        Frame::Ping { id: 31337 },
        Frame::GoAway {
            last_good_stream_id: 7,
            status: GoAwayStatus::OK,
        },
        Frame::Headers {
            stream_id: 7,
            fin: true,
            headers: Headers::new().with("x", "1").with("x", "2"),
        },
        Frame::WindowUpdate {
            stream_id: 7,
            delta_window_size: 65536,
        },
        Frame::Data {
            stream_id: 7,
            fin: false,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Data {
            stream_id: 7,
            fin: true,
            data: Bytes::new(),
        },
    ];
    let mut tx = Codec::new();
    let mut wire = BytesMut::new();
    for f in frames.clone() {
        tx.encode(f, &mut wire).unwrap();
    }
    let mut rx = Codec::new();
    assert_eq!(decode_all(&mut rx, wire), frames);
}

#[test]
fn data_frame_layout() {
    let wire = encode(
        &mut Codec::new(),
        Frame::Data {
            stream_id: 0x0102_0304,
            fin: true,
            data: Bytes::from_static(b"abc"),
        },
    );
    assert_eq!(
        &wire[..],
        &[0x01, 0x02, 0x03, 0x04, FLAG_FIN, 0, 0, 3, b'a', b'b', b'c']
    );
}

#[test]
fn fixed_size_control_frame_layouts() {
    let mut c = Codec::new();
    assert_eq!(
        &encode(&mut c, Frame::Ping { id: 1 })[..],
        &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]
    );
    assert_eq!(
        &encode(
            &mut c,
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::REFUSED_STREAM
            }
        )[..],
        &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 3]
    );
    assert_eq!(
        &encode(
            &mut c,
            Frame::GoAway {
                last_good_stream_id: 5,
                status: GoAwayStatus::PROTOCOL_ERROR
            }
        )[..],
        &[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 1]
    );
    assert_eq!(
        &encode(
            &mut c,
            Frame::WindowUpdate {
                stream_id: 5,
                delta_window_size: 0x1234
            }
        )[..],
        &[
            0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0x12, 0x34
        ]
    );
    // SETTINGS: count, then flags(8) | id(24), value(32).
    assert_eq!(
        &encode(
            &mut c,
            Frame::Settings {
                clear_settings: false,
                settings: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 100
                }],
            }
        )[..],
        &[
            0x80, 0x03, 0x00, 0x04, 0, 0, 0, 12, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 0, 0, 100
        ]
    );
}

/// Compresses a header block with an independent zlib instance, the way any
/// SPDY/3 peer does: fresh stream, preset dictionary, sync flush.
fn compress_block_with(dictionary: &[u8], raw: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), true);
    c.set_dictionary(dictionary).unwrap();
    let mut out = Vec::with_capacity(raw.len() + 128);
    c.compress_vec(raw, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, raw.len());
    out
}

fn raw_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.put_u32(pairs.len() as u32);
    for (n, v) in pairs {
        raw.put_u32(n.len() as u32);
        raw.put_slice(n.as_bytes());
        raw.put_u32(v.len() as u32);
        raw.put_slice(v.as_bytes());
    }
    raw
}

#[test]
fn hand_built_syn_stream_matches_spec_layout() {
    let block = compress_block_with(
        DICTIONARY,
        &raw_block(&[("streamtype", "stdin"), ("x", "a\0b")]),
    );
    let mut wire = BytesMut::new();
    // |1|version=3|type=1|, flags = FIN|UNIDIRECTIONAL, length = 10 + block
    wire.put_u16(0x8000 | 3);
    wire.put_u16(1);
    wire.put_u8(FLAG_FIN | FLAG_UNIDIRECTIONAL);
    let len = 10 + block.len();
    wire.put_uint(len as u64, 3);
    wire.put_u32(0x8000_0003); // reserved bit set: must be ignored
    wire.put_u32(1); // associated-to stream id
    wire.put_u8(5 << 5); // priority 5 in the top 3 bits
    wire.put_u8(2); // slot
    wire.put_slice(&block);

    let frames = decode_all(&mut Codec::new(), wire);
    let [
        Frame::SynStream {
            stream_id,
            associated_stream_id,
            priority,
            slot,
            fin,
            unidirectional,
            headers,
        },
    ] = &frames[..]
    else {
        panic!("expected one SYN_STREAM, got {frames:?}");
    };
    assert_eq!(
        (*stream_id, *associated_stream_id, *priority, *slot),
        (3, 1, 5, 2)
    );
    assert!(*fin && *unidirectional);
    assert_eq!(headers.get("streamtype"), Some("stdin"));
    // NUL-separated values come back as separate values.
    assert_eq!(headers.get_all("x").collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn encoded_syn_reply_layout_and_dictionary_header() {
    let wire = encode(
        &mut Codec::new(),
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        },
    );
    assert_eq!(&wire[..4], &[0x80, 0x03, 0x00, 0x02]);
    assert_eq!(wire[4], 0, "no flags");
    let len = u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize;
    assert_eq!(len, wire.len() - 8);
    assert_eq!(&wire[8..12], &[0, 0, 0, 1]);
    // zlib header with FDICT set, followed by the SPDY/3 dictionary id.
    let zlib = &wire[12..];
    assert_eq!(zlib[0] & 0x0f, 8, "deflate method");
    assert_ne!(zlib[1] & 0x20, 0, "FDICT flag");
    assert_eq!(
        u32::from_be_bytes([zlib[2], zlib[3], zlib[4], zlib[5]]),
        DICTIONARY_ID
    );
    // Sync flush marker ends every header block.
    assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));
}

/// SYN_STREAM frames as a Go spdystream client writes them.
///
/// Produced by a Go 1.19 program that reproduces spdystream's `spdy/write.go`
/// (`writeControlFrameHeader`, `writeHeaderValueBlock`, one
/// `zlib.NewWriterLevelDict(buf, zlib.BestCompression, headerDictionary)` per
/// connection, `Flush()` after each block) with the standard library, for the
/// streams `kubectl exec` opens (one reused `http.Header`, `streamType` set
/// per stream) and then a port-forward data stream. Go's deflate output
/// differs from zlib's, so this pins interoperability with the real peer.
#[rustfmt::skip]
const GO_SPDYSTREAM_SYN_STREAMS: &[u8] = &[
    // id 1, streamType=error (first block: zlib header + dictionary id)
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x29, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x62, 0x60, 0x60, 0x60, 0x04, 0xa7, 0xb3, 0x92,
    0xa2, 0xd4, 0xc4, 0x5c, 0x68, 0x51, 0xc2, 0x9a, 0x0a, 0x0a, 0x68, 0x00, 0x00, 0x00, 0x00, 0xff,
    0xff,
    // id 3, streamType=stdin (continues the same zlib stream)
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xc2, 0x2e, 0x55, 0x5c, 0x92, 0x92, 0x99, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
    // id 5, streamType=stdout
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xc2, 0x2a, 0xc5, 0x56, 0x5c, 0x92, 0x92, 0x5f, 0x5a, 0x02, 0x00, 0x00, 0x00, 0xff,
    0xff,
    // id 7, port-forward: streamType=data, port=8080, requestID=0
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x02, 0x25, 0x63, 0x0c, 0x39, 0x50, 0xe1, 0x94, 0x08, 0x29, 0xe7, 0x8b, 0xc0, 0x59,
    0xca, 0xc2, 0xc0, 0xc2, 0x80, 0x81, 0x81, 0x81, 0xb3, 0x08, 0x92, 0x2e, 0x32, 0x41, 0xf9, 0x85,
    0xd1, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
];

#[test]
fn decodes_go_spdystream_syn_streams() {
    let frames = decode_all(&mut Codec::new(), BytesMut::from(GO_SPDYSTREAM_SYN_STREAMS));
    let summary: Vec<(u32, Vec<(String, String)>)> = frames
        .iter()
        .map(|f| match f {
            Frame::SynStream {
                stream_id,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers,
            } => (
                *stream_id,
                headers
                    .iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
            ),
            other => panic!("unexpected frame {other:?}"),
        })
        .collect();
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        summary,
        vec![
            (1, pairs(&[("streamtype", "error")])),
            (3, pairs(&[("streamtype", "stdin")])),
            (5, pairs(&[("streamtype", "stdout")])),
            (
                7,
                pairs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
            ),
        ]
    );
}

#[test]
fn go_frames_need_the_earlier_frames_context() {
    // The stdin SYN_STREAM alone (without the error one before it) cannot be
    // decoded: the zlib context spans frames.
    let stdin_frame = &GO_SPDYSTREAM_SYN_STREAMS[49..80];
    assert_eq!(stdin_frame[11], 3);
    let err = Codec::new()
        .decode(&mut BytesMut::from(stdin_frame))
        .unwrap_err();
    assert!(matches!(err, FrameError::Compression(_)), "{err}");
}

#[test]
fn compression_context_persists_across_frames() {
    let mut tx = Codec::new();
    let mut rx = Codec::new();
    let mut sizes = Vec::new();
    for id in [1u32, 3, 5] {
        let wire = encode(
            &mut tx,
            Frame::Headers {
                stream_id: id,
                fin: false,
                headers: exec_headers("stdout"),
            },
        );
        sizes.push(wire.len());
        let frames = decode_all(&mut rx, wire);
        assert_eq!(
            frames,
            [Frame::Headers {
                stream_id: id,
                fin: false,
                headers: exec_headers("stdout"),
            }]
        );
    }
    // Repeats compress to back-references into the shared window.
    assert!(sizes[1] < sizes[0], "{sizes:?}");
    assert_eq!(sizes[1], sizes[2], "{sizes:?}");
}

#[test]
fn dictionary_makes_typical_headers_small() {
    let headers = exec_headers("stdout");
    let raw = raw_block(&[("streamtype", "stdout")]);
    let with_dict = encode(
        &mut Codec::new(),
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers,
        },
    );
    let block_len = with_dict.len() - 12;
    // A plain zlib stream (no dictionary) of the same block, for comparison.
    let mut plain = Compress::new(Compression::best(), true);
    let mut without = Vec::with_capacity(256);
    plain
        .compress_vec(&raw, &mut without, FlushCompress::Sync)
        .unwrap();
    assert!(
        block_len < without.len(),
        "dictionary block {block_len} bytes vs plain {} bytes",
        without.len()
    );
    // An empty block (as in our SYN_REPLY) stays tiny too.
    let empty = encode(
        &mut Codec::new(),
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        },
    );
    assert!(empty.len() <= 12 + 20, "{} bytes", empty.len());
}

#[test]
fn block_compressed_with_another_dictionary_is_rejected() {
    let mut other_dict = DICTIONARY.to_vec();
    other_dict[100] ^= 0xff;
    let block = compress_block_with(&other_dict, &raw_block(&[("streamtype", "stdin")]));
    let mut wire = BytesMut::new();
    wire.put_u32(0x8003_0002); // SYN_REPLY
    wire.put_u32(4 + block.len() as u32);
    wire.put_u32(1);
    wire.put_slice(&block);
    let err = Codec::new().decode(&mut wire).unwrap_err();
    match err {
        FrameError::WrongDictionary { found, expected } => {
            assert_eq!(expected, DICTIONARY_ID);
            assert_eq!(found, adler32(&other_dict));
        }
        other => panic!("expected WrongDictionary, got {other}"),
    }
    // And the same block with the right dictionary decodes.
    let block = compress_block_with(DICTIONARY, &raw_block(&[("streamtype", "stdin")]));
    let mut wire = BytesMut::new();
    wire.put_u32(0x8003_0002);
    wire.put_u32(4 + block.len() as u32);
    wire.put_u32(1);
    wire.put_slice(&block);
    let frames = decode_all(&mut Codec::new(), wire);
    assert!(
        matches!(&frames[..], [Frame::SynReply { headers, .. }] if headers.get("streamtype") == Some("stdin"))
    );
}

#[test]
fn corrupt_header_block_is_an_error() {
    let mut wire = BytesMut::new();
    wire.put_u32(0x8003_0008); // HEADERS
    wire.put_u32(4 + 6);
    wire.put_u32(1);
    wire.put_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
    assert!(Codec::new().decode(&mut wire).is_err());
}

#[test]
fn frame_size_limit_is_enforced_before_buffering() {
    let mut codec = Codec::new().with_max_frame_size(1024);
    // Only the 8-byte header of a 2 KiB DATA frame has arrived.
    let mut wire = BytesMut::from(&[0, 0, 0, 1, 0, 0, 0x08, 0x00][..]);
    match codec.decode(&mut wire) {
        Err(FrameError::TooLarge { size, max }) => assert_eq!((size, max), (2048, 1024)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut dst = BytesMut::new();
    let err = codec
        .encode(
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from(vec![0u8; 1025]),
            },
            &mut dst,
        )
        .unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }));
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
}

#[test]
fn unknown_control_frames_are_skipped() {
    let mut wire = BytesMut::new();
    // CREDENTIAL (type 10) with a 3-byte payload, then NOOP (SPDY/2 type 5).
    wire.put_slice(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 3, 1, 2, 3]);
    wire.put_slice(&[0x80, 0x03, 0x00, 0x05, 0, 0, 0, 0]);
    wire.put_slice(&encode(&mut Codec::new(), Frame::Ping { id: 7 }));
    assert_eq!(decode_all(&mut Codec::new(), wire), [Frame::Ping { id: 7 }]);
}

#[test]
fn partial_input_waits_for_the_whole_frame() {
    let wire = encode(
        &mut Codec::new(),
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: exec_headers("stdin"),
        },
    );
    let mut rx = Codec::new();
    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.put_u8(*byte);
        let got = rx.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == wire.len() - 1, "at byte {i}");
    }
}

#[test]
fn malformed_frames_are_rejected() {
    let cases: &[(&str, &[u8])] = &[
        (
            "PING with 5 bytes",
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 5, 0, 0, 0, 1, 0],
        ),
        (
            "RST_STREAM with 4 bytes",
            &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        (
            "GOAWAY with 4 bytes (SPDY/2 layout)",
            &[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        (
            "SETTINGS count mismatch",
            &[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        (
            "SYN_STREAM too short",
            &[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 4, 0, 0, 0, 1],
        ),
        ("DATA on stream 0", &[0, 0, 0, 0, 0, 0, 0, 1, 0xaa]),
        (
            "RST_STREAM on stream 0",
            &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
    ];
    for (what, bytes) in cases {
        let err = Codec::new().decode(&mut BytesMut::from(*bytes));
        assert!(
            matches!(err, Err(FrameError::Invalid { .. })),
            "{what}: {err:?}"
        );
    }
    let err = Codec::new()
        .decode(&mut BytesMut::from(
            &[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..],
        ))
        .unwrap_err();
    assert!(matches!(err, FrameError::UnsupportedVersion(2)), "{err}");
}

#[test]
fn multi_valued_headers_round_trip_compressed() {
    let headers = Headers::new()
        .with("Port", "80")
        .with("requestID", "7")
        .with("port", "443");
    let mut tx = Codec::new();
    let frames = decode_all(
        &mut Codec::new(),
        encode(
            &mut tx,
            Frame::Headers {
                stream_id: 1,
                fin: false,
                headers,
            },
        ),
    );
    let [Frame::Headers { headers, .. }] = &frames[..] else {
        panic!("{frames:?}")
    };
    assert_eq!(headers.get_all("PORT").collect::<Vec<_>>(), ["80", "443"]);
    assert_eq!(headers.get("requestid"), Some("7"));
}

/// A SYN_STREAM frame carrying an already compressed header block, for
/// blocks the encoder would refuse to build.
fn syn_stream_with_block(stream_id: u32, block: &[u8]) -> BytesMut {
    let mut wire = BytesMut::new();
    wire.put_u32(0x8003_0001);
    wire.put_u32(10 + block.len() as u32);
    wire.put_u32(stream_id);
    wire.put_u32(0);
    wire.put_u16(0);
    wire.put_slice(block);
    wire
}

/// A block of one pair whose value is `parts` joined by NUL.
fn nul_joined_block(name: &str, parts: &[&str]) -> Vec<u8> {
    raw_block(&[(name, &parts.join("\0"))])
}

fn refused_by(result: Result<Headers, FrameError>) -> HeaderLimit {
    match result {
        Err(FrameError::HeaderLimit { limit, .. }) => limit,
        other => panic!("expected a header limit refusal, got {other:?}"),
    }
}

#[test]
fn header_entry_limit_counts_nul_separated_values() {
    let at_limit = vec!["v"; MAX_HEADER_ENTRIES];
    let parsed = parse_header_block(&nul_joined_block("n", &at_limit)).unwrap();
    assert_eq!(parsed.len(), MAX_HEADER_ENTRIES);

    let over = vec!["v"; MAX_HEADER_ENTRIES + 1];
    assert_eq!(
        refused_by(parse_header_block(&nul_joined_block("n", &over))),
        HeaderLimit::Entries
    );
    // A pair count above the limit is refused before anything is read.
    let mut raw = Vec::new();
    raw.put_u32(MAX_HEADER_ENTRIES as u32 + 1);
    assert_eq!(refused_by(parse_header_block(&raw)), HeaderLimit::Entries);
}

#[test]
fn header_byte_limit_counts_the_name_once_per_entry() {
    // Two entries of a 1-byte name and values filling the rest exactly.
    let half = (MAX_HEADER_BYTES - 2) / 2;
    let v = "x".repeat(half);
    let parsed = parse_header_block(&nul_joined_block("n", &[&v, &v])).unwrap();
    assert_eq!(parsed.len(), 2);

    let v1 = "x".repeat(half + 1);
    assert_eq!(
        refused_by(parse_header_block(&nul_joined_block("n", &[&v, &v1]))),
        HeaderLimit::Bytes
    );
    // A long name repeated by NUL-splitting: 40 entries of a 2 KiB name.
    let name = "n".repeat(2048);
    assert_eq!(
        refused_by(parse_header_block(&nul_joined_block(&name, &[""; 40]))),
        HeaderLimit::Bytes
    );
}

#[test]
fn oversized_raw_block_is_refused_unparsed() {
    let mut raw = raw_block(&[("n", "v")]);
    raw.resize(MAX_HEADER_BLOCK_SIZE + 1, 0);
    assert_eq!(refused_by(parse_header_block(&raw)), HeaderLimit::BlockSize);
}

#[test]
fn decompression_stops_at_the_block_cap() {
    // 4 MiB of one byte compresses to a few KiB; inflating it whole is what
    // the cap prevents.
    let raw = raw_block(&[("n", &"x".repeat(4 << 20))]);
    let block = compress_block_with(DICTIONARY, &raw);
    assert!(block.len() < 16 * 1024, "{}", block.len());
    let err = Codec::new()
        .decode(&mut syn_stream_with_block(1, &block))
        .unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::HeaderLimit {
                stream_id: Some(1),
                limit: HeaderLimit::BlockSize
            }
        ),
        "{err}"
    );
    assert!(!HeaderLimit::BlockSize.compression_in_sync());
    assert!(
        err.to_string().contains("decompresses to more than"),
        "{err}"
    );
}

#[test]
fn refused_header_block_leaves_the_codec_in_step() {
    // Both blocks come from one peer compression context, as on the wire.
    let mut client = Codec::new();
    let over = vec!["v"; MAX_HEADER_ENTRIES + 1];
    let block = client
        .compress_header_block(&nul_joined_block("n", &over))
        .unwrap();
    let mut wire = syn_stream_with_block(1, &block);
    wire.put_slice(&encode(
        &mut client,
        Frame::SynStream {
            stream_id: 3,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: exec_headers("stdin"),
        },
    ));

    let mut server = Codec::new();
    match server.decode(&mut wire) {
        Err(FrameError::HeaderLimit {
            stream_id: Some(1),
            limit,
        }) => {
            assert_eq!(limit, HeaderLimit::Entries);
            assert!(limit.compression_in_sync());
        }
        other => panic!("expected the entry limit, got {other:?}"),
    }
    match server.decode(&mut wire).unwrap() {
        Some(Frame::SynStream {
            stream_id: 3,
            headers,
            ..
        }) => assert_eq!(headers.get("streamtype"), Some("stdin")),
        other => panic!("expected SYN_STREAM 3, got {other:?}"),
    }
}

#[test]
fn compressed_and_direct_header_decoding_agree() {
    let raw = raw_block(&[("streamtype", "data"), ("port", "80\x00443")]);
    let mut client = Codec::new();
    let block = client.compress_header_block(&raw).unwrap();
    let via_codec = Codec::new().decode_header_block(&block).unwrap();
    assert_eq!(via_codec, parse_header_block(&raw).unwrap());
    assert_eq!(via_codec.get_all("port").collect::<Vec<_>>(), ["80", "443"]);
}
