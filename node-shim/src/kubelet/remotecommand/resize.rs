//! Terminal sizes from the client's resize channel (WebSocket channel 4 or the SPDY `resize`
//! stream, same JSON on both).

use bytes::BytesMut;
use podprovider_proto::v1 as pb;

use super::MAX_RESIZE_BUFFER;

/// Terminal size messages: JSON objects `{"Width":..,"Height":..}`, possibly split or batched.
#[derive(Default)]
pub(super) struct ResizeDecoder {
    /// `pub(super)` so the tests can check its bound.
    pub(super) buf: BytesMut,
}

impl ResizeDecoder {
    pub(super) fn push(&mut self, data: &[u8]) -> Vec<pb::TerminalSize> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Size {
            width: u32,
            height: u32,
        }
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
            loop {
                match it.next() {
                    Some(Ok(s)) => {
                        consumed = it.byte_offset();
                        sizes.push(pb::TerminalSize {
                            width: s.width,
                            height: s.height,
                        });
                    }
                    // Not a size message: skip what is buffered rather than wait on it forever.
                    Some(Err(e)) if !e.is_eof() => {
                        consumed = self.buf.len();
                        break;
                    }
                    _ => break,
                }
            }
        }
        let _ = self.buf.split_to(consumed);
        if self.buf.len() > MAX_RESIZE_BUFFER {
            // Not a size message in the making: drop it rather than grow.
            self.buf.clear();
        }
        sizes
    }
}
