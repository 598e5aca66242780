use podprovider_proto::v1 as pb;

use super::{
    MAX_RESIZE_BUFFER, Options,
    resize::ResizeDecoder,
    session::{Outcome, status_json},
};

#[test]
fn options_from_api_server_and_kubectl_names() {
    let o = Options::parse(
        Some("command=sh&command=-c&command=echo+hi&input=1&output=1&error=1&tty=1"),
        false,
    )
    .expect("valid");
    assert_eq!(o.command, ["sh", "-c", "echo hi"]);
    assert!(o.stdin && o.stdout && o.tty);
    assert!(!o.stderr, "stderr is merged into stdout with a TTY");
    let o = Options::parse(Some("stdout=true&stderr=true"), true).expect("attach");
    assert!(o.stdout && o.stderr && !o.stdin);
    assert!(Options::parse(Some("command=ls"), false).is_err());
    assert!(Options::parse(Some("output=1"), false).is_err());
}

#[test]
fn status_for_exit_codes() {
    let ok = status_json(
        &Outcome::Exit(pb::ExitStatus {
            code: 0,
            message: String::new(),
        }),
        &[],
    );
    assert_eq!(ok, r#"{"metadata":{},"status":"Success"}"#);
    let failed: serde_json::Value = serde_json::from_str(&status_json(
        &Outcome::Exit(pb::ExitStatus {
            code: 3,
            message: String::new(),
        }),
        &["false".into()],
    ))
    .expect("json");
    assert_eq!(failed["reason"], "NonZeroExitCode");
    assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(failed["details"]["causes"][0]["message"], "3");
}

#[test]
fn resize_messages_split_and_batched() {
    let mut d = ResizeDecoder::default();
    assert!(d.push(br#"{"Width":80,"#).is_empty());
    let sizes = d.push(br#""Height":24}{"Width":100,"Height":40}"#);
    assert_eq!(
        sizes,
        [
            pb::TerminalSize {
                width: 80,
                height: 24
            },
            pb::TerminalSize {
                width: 100,
                height: 40
            }
        ]
    );
    assert!(d.buf.is_empty());
}

#[test]
fn resize_garbage_is_bounded() {
    let mut d = ResizeDecoder::default();
    for _ in 0..1000 {
        assert!(d.push(&[b'x'; 1024]).is_empty());
        assert!(d.buf.len() <= MAX_RESIZE_BUFFER);
    }
    // An endless unterminated string is cut off too.
    assert!(d.push(br#"{"Width":""#).is_empty());
    for _ in 0..100 {
        assert!(d.push(&[b'a'; 1024]).is_empty());
        assert!(d.buf.len() <= MAX_RESIZE_BUFFER);
    }
    // After garbage, real messages still decode.
    let sizes = d.push(br#"{"Width":1,"Height":2}"#);
    assert_eq!(sizes.len(), 1);
}
