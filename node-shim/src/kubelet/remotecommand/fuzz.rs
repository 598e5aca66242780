//! Hostile input to the WebSocket channel framing, the terminal-size decoder and the query
//! options: nothing panics, buffers stay bounded, valid input still works.

use proptest::prelude::*;

use podprovider_proto::v1::{self as pb, stream_input::Input};

use super::{
    MAX_RESIZE_BUFFER, Options,
    resize::ResizeDecoder,
    websocket::{channel, client_inputs},
};

/// Bytes that look like size messages in the making, to reach the decoder's deeper states.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"\"Width\":".to_vec()),
            Just(b"\"Height\":".to_vec()),
            Just(b"\"".to_vec()),
            Just(b",".to_vec()),
            Just(b"[".to_vec()),
            Just(b" ".to_vec()),
            Just(b"99999999999".to_vec()),
            (0u32..100_000).prop_map(|n| n.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        4 => jsonish(),
        // Over the buffer cap in one piece.
        1 => prop::collection::vec(any::<u8>(), MAX_RESIZE_BUFFER - 8..MAX_RESIZE_BUFFER * 2),
        1 => (1usize..MAX_RESIZE_BUFFER * 2).prop_map(|n| {
            let mut v = b"{\"Width\":\"".to_vec();
            v.resize(n, b'a');
            v
        }),
    ]
}

/// A valid size message for `(width, height)`, keys in either order, optional spacing.
fn size_message(width: u32, height: u32, swap: bool, space: &str) -> String {
    let w = format!("\"Width\"{space}:{space}{width}");
    let h = format!("\"Height\"{space}:{space}{height}");
    let (a, b) = if swap { (h, w) } else { (w, h) };
    format!("{{{space}{a},{space}{b}{space}}}")
}

proptest! {
    #![proptest_config(crate::fuzzing::heavy_config())]

    #[test]
    fn fuzz_resize_decoder_arbitrary_chunks(chunks in prop::collection::vec(chunk(), 0..24)) {
        let mut d = ResizeDecoder::default();
        for c in &chunks {
            let _ = d.push(c);
            prop_assert!(d.buf.len() <= MAX_RESIZE_BUFFER, "buffer {} bytes", d.buf.len());
        }
    }
}

proptest! {
    #![proptest_config(crate::fuzzing::config())]

    #[test]
    fn fuzz_resize_messages_split_anywhere_decode(
        sizes in prop::collection::vec((any::<u32>(), any::<u32>(), any::<bool>()), 1..8),
        space in prop_oneof![Just(""), Just(" "), Just("\n"), Just("\t\r\n ")],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let stream: String = sizes
            .iter()
            .map(|&(w, h, swap)| size_message(w, h, swap, space))
            .collect::<Vec<_>>()
            .join(space);
        let bytes = stream.as_bytes();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut d = ResizeDecoder::default();
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            got.extend(d.push(&bytes[at..cut]));
            at = cut;
        }
        let want: Vec<_> = sizes
            .iter()
            .map(|&(width, height, _)| pb::TerminalSize { width, height })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn fuzz_websocket_client_messages(
        messages in prop::collection::vec(
            (
                prop_oneof![
                    Just(channel::STDIN),
                    Just(channel::RESIZE),
                    Just(channel::CLOSE),
                    any::<u8>(),
                ],
                prop_oneof![prop::collection::vec(any::<u8>(), 0..64), jsonish()],
                any::<bool>(),
            ),
            0..16,
        ),
    ) {
        let mut resize = ResizeDecoder::default();
        // Decoded on its own, the resize channel must give the same sizes.
        let mut model = ResizeDecoder::default();
        for (ch, payload, empty) in messages {
            let data: Vec<u8> = if empty {
                Vec::new()
            } else {
                [&[ch][..], &payload].concat()
            };
            let got = client_inputs(&data, &mut resize);
            prop_assert!(resize.buf.len() <= MAX_RESIZE_BUFFER);
            if empty {
                prop_assert!(got.is_empty());
                continue;
            }
            match ch {
                channel::STDIN => prop_assert_eq!(got, vec![Input::Stdin(payload)]),
                channel::RESIZE => {
                    let want: Vec<_> = model.push(&payload).into_iter().map(Input::Resize).collect();
                    prop_assert_eq!(got, want);
                }
                channel::CLOSE if payload.first() == Some(&channel::STDIN) => {
                    prop_assert_eq!(got, vec![Input::StdinClosed(true)]);
                }
                _ => prop_assert!(got.is_empty(), "channel {} gave {:?}", ch, got),
            }
        }
    }

    #[test]
    fn fuzz_exec_options_arbitrary_queries(
        query in prop_oneof![any::<String>(), query_string()],
        attach in any::<bool>(),
    ) {
        match Options::parse(Some(&query), attach) {
            Ok(o) => {
                prop_assert!(o.stdin || o.stdout || o.stderr);
                prop_assert!(!(o.tty && o.stderr), "stderr is merged with a TTY");
                prop_assert!(attach || !o.command.is_empty());
            }
            Err(msg) => prop_assert!(msg.starts_with("you must specify")),
        }
    }
}

/// Queries made of the names exec and attach read, with assorted values.
fn query_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("command"),
        Just("input"),
        Just("output"),
        Just("error"),
        Just("tty"),
        Just("stdin"),
        Just("stdout"),
        Just("stderr"),
        Just("x"),
        Just(""),
    ];
    let value = prop_oneof![
        Just(String::new()),
        Just("1".into()),
        Just("0".into()),
        Just("false".into()),
        Just("FALSE".into()),
        Just("true".into()),
        Just("%ff%00".into()),
        Just("%".into()),
        "[a-z0-9+%=&]{0,8}",
    ];
    prop::collection::vec((key, value, any::<bool>()), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, bare)| {
                if bare {
                    k.to_owned()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}
