//! Exec over ACI's WebSocket terminal session: connect to `ws://` or `wss://`, send the password
//! first, then bridge the contract's Exec stream. ACI's sessions run one executable without
//! arguments and report no exit code, so a command gets a shell wrapper: `/bin/sh` runs it and
//! prints an exit-status marker, which the bridge strips from the output and turns into the `exit`
//! message.

use std::{pin::Pin, sync::Arc};

use futures::{SinkExt, StreamExt};
use podprovider_proto::v1::{
    ExecRequest, ExitStatus, StreamOutput, exec_request, stream_input, stream_output,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{Message, client::IntoClientRequest},
};
use tonic::{Status, Streaming};

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open session.
pub type Session = WebSocketStream<Pin<Box<dyn Io>>>;

/// How a session's password is presented.
#[derive(Clone, Copy)]
pub enum Password<'a> {
    /// As the first message (exec).
    FirstMessage(&'a str),
    /// As the `Authorization` header of the upgrade request (attach).
    Header(&'a str),
}

/// Connects to `uri` (`ws://` or `wss://`) and presents `password`.
/// Errors name the host only: the URI may carry a token.
pub async fn connect(
    uri: &str,
    password: Password<'_>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Session, String> {
    let url = url::Url::parse(uri).map_err(|_| "the exec session URI is not a URL".to_owned())?;
    let host = url
        .host_str()
        .ok_or_else(|| "the exec session URI has no host".to_owned())?
        .to_owned();
    let secure = match url.scheme() {
        "wss" | "https" => true,
        "ws" | "http" => false,
        other => return Err(format!("unsupported exec session scheme {other}")),
    };
    let port = url.port().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot reach the exec session at {host}: {e}"))?;
    let io: Pin<Box<dyn Io>> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("{host} is not a valid TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with the exec session at {host} failed: {e}"))?;
        Box::pin(tls)
    } else {
        Box::pin(tcp)
    };
    let mut request = uri
        .into_client_request()
        .map_err(|_| format!("the session URI for {host} is not a WebSocket request"))?;
    if let Password::Header(p) = password {
        let value = http::HeaderValue::from_str(p)
            .map_err(|_| "the session password is not a header value".to_owned())?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let (mut ws, _) = client_async(request, io)
        .await
        .map_err(|e| format!("the session at {host} refused the WebSocket: {e}"))?;
    if let Password::FirstMessage(p) = password {
        ws.send(Message::text(p.to_owned()))
            .await
            .map_err(|e| format!("cannot authenticate the exec session: {e}"))?;
    }
    Ok(ws)
}

/// Quotes one word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The shell script that runs `command` and reports its exit status between markers.
#[derive(Clone, Debug)]
pub struct Wrapper {
    /// The command reads the caller's stdin (else /dev/null).
    pub stdin: bool,
    start: String,
    exit: String,
    /// The script to write to the shell's stdin.
    pub script: String,
}

impl Wrapper {
    /// A wrapper for `command`; `stdin` forwards the caller's input to it; `tty` keeps the
    /// terminal's echo for interactive use.
    pub fn new(command: &[String], stdin: bool, tty: bool, nonce: &str) -> Self {
        let cmd: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
        let redirect = if stdin { "" } else { " </dev/null" };
        let merge = if tty { "" } else { " 2>&1" };
        // Without a TTY the caller wants the bytes as they are: no echo, no CRLF on output, no
        // CR→NL on input, no signals or flow control from bytes in stdin. ICANON stays on, so
        // ^D at the start of a line is end of input (how the bridge closes stdin).
        let quiet = if tty {
            ""
        } else {
            "stty -echo -onlcr -icrnl -isig -ixon 2>/dev/null; "
        };
        // The markers are assembled by printf so the script's own echo never contains them.
        let script = format!(
            "{quiet}printf '%s_%s__\\n' __vk_start {nonce}; {}{redirect}{merge}; printf '%s_%s__:%d\\n' __vk_exit {nonce} \"$?\"; exit\n",
            cmd.join(" ")
        );
        Self {
            stdin,
            start: format!("__vk_start_{nonce}__"),
            exit: format!("__vk_exit_{nonce}__:"),
            script,
        }
    }
}

/// What the filter found in a chunk of session output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The command's output.
    pub output: Vec<u8>,
    /// The command has started (the caller may now forward stdin).
    pub started: bool,
    /// The command's exit status.
    pub exit: Option<i32>,
}

/// Strips the wrapper's markers (and everything the shell printed before the command started)
/// from the session output.
#[derive(Debug)]
pub struct MarkerFilter {
    wrapper: Wrapper,
    buf: Vec<u8>,
    started: bool,
    done: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest suffix of `hay` that is a prefix of `needle`.
fn partial_suffix(hay: &[u8], needle: &[u8]) -> usize {
    (1..needle.len().min(hay.len() + 1))
        .rev()
        .find(|&n| hay[hay.len() - n..] == needle[..n])
        .unwrap_or(0)
}

impl MarkerFilter {
    /// A filter for `wrapper`'s markers.
    pub fn new(wrapper: Wrapper) -> Self {
        Self {
            wrapper,
            buf: Vec::new(),
            started: false,
            done: false,
        }
    }

    /// Feeds session output; returns what to pass on.
    pub fn feed(&mut self, data: &[u8]) -> Filtered {
        let mut out = Filtered::default();
        if self.done {
            return out;
        }
        self.buf.extend_from_slice(data);
        if !self.started {
            let Some(at) = find(&self.buf, self.wrapper.start.as_bytes()) else {
                return out;
            };
            // Drop the marker line and everything before it (prompt, echoed script).
            let after = at + self.wrapper.start.len();
            let Some(nl) = self.buf[after..].iter().position(|b| *b == b'\n') else {
                return out;
            };
            self.buf.drain(..after + nl + 1);
            self.started = true;
            out.started = true;
        }
        let exit = self.wrapper.exit.as_bytes();
        if let Some(at) = find(&self.buf, exit) {
            let rest = &self.buf[at + exit.len()..];
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                // The code has not fully arrived; pass on what precedes the marker.
                out.output = self.buf.drain(..at).collect();
                return out;
            };
            let code = String::from_utf8_lossy(&rest[..nl])
                .trim()
                .parse()
                .unwrap_or(1);
            out.output = self.buf[..at].to_vec();
            out.exit = Some(code);
            self.buf.clear();
            self.done = true;
            return out;
        }
        // Hold back what could be the start of the marker.
        let keep = partial_suffix(&self.buf, exit);
        out.output = self.buf.drain(..self.buf.len() - keep).collect();
        out
    }
}

/// ^D: a terminal's end of input (at the start of a line; after other input it only flushes).
const EOT: u8 = 4;

/// The caller's stdin on its way to the session's terminal: held until the command has started,
/// and closed by ^D — ACI's terminal session has no other end-of-input. Canonical terminal input
/// ends a read at ^D: at the start of a line that read is empty, which the command takes as end of
/// file; after a partial line it only delivers that line, so a second ^D is needed.
#[derive(Debug, Default)]
pub struct Stdin {
    /// The command reads this terminal (else it reads /dev/null and nothing is sent).
    wanted: bool,
    held: Vec<u8>,
    last: Option<u8>,
    closed: bool,
    eof_sent: bool,
}

impl Stdin {
    /// Stdin for a command that reads the terminal (`wanted`) or not.
    pub fn new(wanted: bool) -> Self {
        Self {
            wanted,
            ..Self::default()
        }
    }

    /// `data` from the caller: what to send now (nothing until the command has `started`).
    pub fn data(&mut self, data: Vec<u8>, started: bool) -> Option<Vec<u8>> {
        if !self.wanted || self.closed || data.is_empty() {
            return None;
        }
        self.last = data.last().copied();
        if started {
            Some(data)
        } else {
            self.held.extend_from_slice(&data);
            None
        }
    }

    /// The caller closed stdin: the end-of-input bytes to send now, if the command has started.
    pub fn close(&mut self, started: bool) -> Option<Vec<u8>> {
        self.closed = true;
        if started { self.eof() } else { None }
    }

    /// The command has started: everything held back, then the end of input if stdin closed.
    pub fn release(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.held);
        if self.closed
            && let Some(eof) = self.eof()
        {
            out.extend(eof);
        }
        out
    }

    fn eof(&mut self) -> Option<Vec<u8>> {
        if !self.wanted || self.eof_sent {
            return None;
        }
        self.eof_sent = true;
        Some(match self.last {
            None | Some(b'\n') => vec![EOT],
            Some(_) => vec![EOT, EOT],
        })
    }
}

/// Output side of a bridge.
pub type OutputTx = mpsc::Sender<Result<StreamOutput, Status>>;

fn stdout(data: Vec<u8>) -> StreamOutput {
    StreamOutput {
        output: Some(stream_output::Output::Stdout(data)),
    }
}

fn exit(code: i32, message: &str) -> StreamOutput {
    StreamOutput {
        output: Some(stream_output::Output::Exit(ExitStatus {
            code,
            message: message.to_owned(),
        })),
    }
}

/// Bridges an attach session (output only) to the contract's Attach stream until the session
/// closes or the caller goes away. The caller's messages are read only to notice it leaving:
/// ACI's attach carries no input. `ended` is asked, once the session closes, for the exit code
/// of a main process that ended meanwhile (the contract sends `exit` only then).
pub async fn bridge_attach<F, Fut>(
    session: Session,
    mut input: Streaming<podprovider_proto::v1::AttachRequest>,
    tx: OutputTx,
    ended: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<i32>>,
{
    let (mut sink, mut source) = session.split();
    let mut input_open = true;
    loop {
        tokio::select! {
            msg = input.next(), if input_open => {
                if !matches!(msg, Some(Ok(_))) {
                    input_open = false;
                }
            }
            msg = source.next() => {
                let data = match msg {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        if let Some(code) = ended().await {
                            let _ = tx.send(Ok(exit(code, ""))).await;
                        }
                        return;
                    }
                    Some(Ok(_)) => continue,
                };
                if tx.send(Ok(stdout(data))).await.is_err() {
                    break;
                }
            }
            () = tx.closed() => break,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

/// Bridges an open session and the contract's Exec streams until the command ends or either
/// side goes away. With `wrapper`, the script is sent first, stdin waits for the start marker,
/// and the exit marker gives the exit code; without one (a TTY passthrough) the exit is reported
/// as 0 with a note, since the cloud does not say. A closed stdin (message or half-close) is
/// sent as ^D ([`Stdin`]).
pub async fn bridge(
    session: Session,
    mut input: Streaming<ExecRequest>,
    wrapper: Option<Wrapper>,
    tx: OutputTx,
) {
    let (mut sink, mut source) = session.split();
    let mut filter = wrapper.clone().map(MarkerFilter::new);
    if let Some(w) = &wrapper
        && sink
            .send(Message::binary(w.script.clone().into_bytes()))
            .await
            .is_err()
    {
        let _ = tx
            .send(Err(Status::unavailable("the exec session closed at once")))
            .await;
        return;
    }
    let mut started = wrapper.is_none();
    let mut stdin = Stdin::new(wrapper.as_ref().is_none_or(|w| w.stdin));
    let mut input_open = true;
    loop {
        tokio::select! {
            msg = input.next(), if input_open => match msg {
                Some(Ok(ExecRequest { request: Some(exec_request::Request::Input(i)) })) => {
                    match i.input {
                        Some(stream_input::Input::Stdin(data)) => {
                            if let Some(data) = stdin.data(data, started)
                                && sink.send(Message::binary(data)).await.is_err()
                            {
                                break;
                            }
                        }
                        Some(stream_input::Input::StdinClosed(_)) => {
                            if let Some(eof) = stdin.close(started) {
                                let _ = sink.send(Message::binary(eof)).await;
                            }
                        }
                        // Resizes: these sessions take a size only at creation.
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                // A half-closed request stream means the same as stdin_closed.
                Some(Err(_)) | None => {
                    input_open = false;
                    if let Some(eof) = stdin.close(started) {
                        let _ = sink.send(Message::binary(eof)).await;
                    }
                }
            },
            msg = source.next() => {
                let data = match msg {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        let done = if filter.is_some() {
                            exit(1, "the exec session ended before the command reported its exit status")
                        } else {
                            exit(0, "the cloud does not report the exit status of terminal sessions")
                        };
                        let _ = tx.send(Ok(done)).await;
                        return;
                    }
                    Some(Ok(_)) => continue,
                };
                let Some(f) = filter.as_mut() else {
                    if tx.send(Ok(stdout(data))).await.is_err() {
                        break;
                    }
                    continue;
                };
                let out = f.feed(&data);
                if out.started {
                    started = true;
                    let held = stdin.release();
                    if !held.is_empty() && sink.send(Message::binary(held)).await.is_err() {
                        break;
                    }
                }
                if !out.output.is_empty() && tx.send(Ok(stdout(out.output))).await.is_err() {
                    break;
                }
                if let Some(code) = out.exit {
                    let _ = tx.send(Ok(exit(code, ""))).await;
                    break;
                }
            }
            () = tx.closed() => break,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_held_until_the_command_starts_and_closed_with_ctrl_d() {
        // ACI's exec is a terminal: end of input is ^D at the start of a line.
        let mut s = Stdin::new(true);
        assert_eq!(s.data(b"x\n".to_vec(), false), None);
        assert_eq!(s.close(false), None);
        assert_eq!(s.release(), b"x\n\x04");
        assert_eq!(s.close(true), None, "one end of input only");

        // A partial line needs a second ^D: the first only delivers the line.
        let mut s = Stdin::new(true);
        assert_eq!(s.data(b"abc".to_vec(), true), Some(b"abc".to_vec()));
        assert_eq!(s.close(true), Some(vec![4, 4]));
        assert_eq!(
            s.data(b"late".to_vec(), true),
            None,
            "nothing after the close"
        );

        // No input at all: a lone ^D.
        assert_eq!(Stdin::new(true).close(true), Some(vec![4]));
        // A command reading /dev/null is sent nothing.
        let mut s = Stdin::new(false);
        assert_eq!(s.data(b"x".to_vec(), true), None);
        assert_eq!(s.close(true), None);
    }

    #[test]
    fn without_a_tty_the_terminal_passes_bytes_unchanged() {
        let w = Wrapper::new(&["cat".into()], true, false, "n1");
        assert!(
            w.script
                .starts_with("stty -echo -onlcr -icrnl -isig -ixon 2>/dev/null; "),
            "{}",
            w.script
        );
        let tty = Wrapper::new(&["cat".into()], true, true, "n1");
        assert!(!tty.script.contains("stty"), "{}", tty.script);
    }

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_script_never_contains_its_own_markers() {
        let w = Wrapper::new(&["echo".into(), "hi there".into()], false, false, "n1");
        assert!(!w.script.contains(&w.start) && !w.script.contains(&w.exit));
        assert!(
            w.script.contains("echo 'hi there' </dev/null 2>&1;"),
            "{}",
            w.script
        );
    }

    #[test]
    fn the_filter_strips_echo_markers_and_finds_the_exit_code() {
        let w = Wrapper::new(&["x".into()], true, false, "n1");
        let mut f = MarkerFilter::new(w.clone());
        // The shell echoes the script (with a TTY) before the start marker.
        let r = f.feed(format!("$ {}", w.script).as_bytes());
        assert_eq!(r, Filtered::default());
        let r = f.feed(b"__vk_start_n1__\r\nhello\nwor");
        assert!(r.started);
        assert_eq!(r.output, b"hello\nwor");
        // A marker split across messages is held back, then removed.
        let r = f.feed(b"ld__vk_ex");
        assert_eq!(r.output, b"ld");
        let r = f.feed(b"it_n1__:42\r\n$ ");
        assert_eq!(r.output, b"");
        assert_eq!(r.exit, Some(42));
        assert_eq!(f.feed(b"more"), Filtered::default());
    }
}
