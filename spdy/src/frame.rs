//! The SPDY/3.1 frame codec.
//!
//! [`Codec`] turns bytes into [`Frame`]s and back. It implements
//! [`tokio_util::codec::Decoder`] and [`tokio_util::codec::Encoder`], so it can
//! be used with `Framed`, or driven by hand over a `BytesMut`.
//!
//! Wire layout (all integers big-endian):
//!
//! ```text
//! control frame:  |1| version(15) | type(16) | flags(8) | length(24) | payload
//! data frame:     |0| stream-id(31)          | flags(8) | length(24) | payload
//! ```
//!
//! Header blocks (in SYN_STREAM, SYN_REPLY and HEADERS) are a count followed by
//! name/value pairs, every length a 32-bit integer, compressed with zlib primed
//! with [`DICTIONARY`]. SPDY keeps one zlib stream per direction for the whole
//! connection, so a `Codec` owns one compressor (for frames it encodes) and one
//! decompressor (for frames it decodes); use one `Codec` per connection
//! direction, never one per frame.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio_util::codec::{Decoder, Encoder};

use crate::dictionary::{DICTIONARY, DICTIONARY_ID};

/// A stream identifier (31 bits; the top bit of the wire field is reserved).
pub type StreamId = u32;

/// The protocol version this codec speaks (SPDY/3 and SPDY/3.1 share it).
pub const VERSION: u16 = 3;

/// Default limit on a frame's payload length; see [`Codec::with_max_frame_size`].
///
/// Go's spdystream writes one DATA frame per `Write` call, and Kubernetes
/// copies streams through 32 KiB buffers, so 1 MiB leaves ample headroom
/// while bounding what one frame can make us buffer.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;

/// Limit on a header block after decompression: 128 KiB.
///
/// zlib inflates up to ~1000:1, so the frame size limit does not bound the
/// plain block; inflate stops as soon as it passes this. Any block that keeps
/// to [`MAX_HEADER_ENTRIES`] and [`MAX_HEADER_BYTES`] is under 67 KiB (the
/// bytes plus 8 length bytes per pair), so this leaves room without letting a
/// block grow past what the parser could accept. A block over it breaks
/// [`HeaderLimit::BlockSize`], which ends the session: the rest of the block
/// was not inflated, so the zlib context is out of step with the peer's.
pub const MAX_HEADER_BLOCK_SIZE: usize = 128 * 1024;

/// Limit on the entries of one decoded header block: 64.
///
/// Each part of a NUL-joined value is one entry, so the count is taken after
/// splitting: without it a 4 KiB name with ~250k NULs in its value (a few
/// hundred bytes compressed) decoded into ~250k copies of the name, ~1 GiB.
/// Kubernetes sends about 5 (`streamtype`, `port`, `requestid`, ...).
pub const MAX_HEADER_ENTRIES: usize = 64;

/// Limit on the name and value bytes of one decoded header block, summed
/// over entries (a name counts once per entry it is stored in): 64 KiB.
///
/// Checked before each entry is allocated, so decoding a block never holds
/// more than this in names and values. Kubernetes' headers are well under
/// 1 KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The largest payload the 24-bit length field can describe.
const MAX_LENGTH_FIELD: usize = (1 << 24) - 1;

const FRAME_HEADER_LEN: usize = 8;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;
const CONTROL_BIT: u32 = 0x8000_0000;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM frames.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS frames.
pub const FLAG_SETTINGS_CLEAR_SETTINGS: u8 = 0x01;

/// Status code of a RST_STREAM frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INVALID_STREAM: Self = Self(2);
    pub const REFUSED_STREAM: Self = Self(3);
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    pub const CANCEL: Self = Self(5);
    pub const INTERNAL_ERROR: Self = Self(6);
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    pub const STREAM_IN_USE: Self = Self(8);
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    pub const INVALID_CREDENTIALS: Self = Self(10);
    pub const FRAME_TOO_LARGE: Self = Self(11);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            10 => "INVALID_CREDENTIALS",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl fmt::Debug for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RstStatus({})", self.0),
        }
    }
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Status code of a GOAWAY frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: Self = Self(0);
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// One entry of a SETTINGS frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Per-entry flags (`FLAG_SETTINGS_PERSIST_VALUE`, `FLAG_SETTINGS_PERSISTED`).
    pub flags: u8,
    /// The setting id (24 bits), e.g. [`Setting::INITIAL_WINDOW_SIZE`].
    pub id: u32,
    pub value: u32,
}

impl Setting {
    pub const UPLOAD_BANDWIDTH: u32 = 1;
    pub const DOWNLOAD_BANDWIDTH: u32 = 2;
    pub const ROUND_TRIP_TIME: u32 = 3;
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const CURRENT_CWND: u32 = 5;
    pub const DOWNLOAD_RETRANS_RATE: u32 = 6;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
    pub const CLIENT_CERTIFICATE_VECTOR_SIZE: u32 = 8;

    pub const FLAG_PERSIST_VALUE: u8 = 0x01;
    pub const FLAG_PERSISTED: u8 = 0x02;
}

/// A decoded SPDY/3.1 frame.
///
/// Stream ids are 31-bit; the encoder masks off the reserved top bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: StreamId,
        associated_stream_id: StreamId,
        /// 0 (highest) to 7 (lowest).
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: StreamId,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: StreamId,
        status: RstStatus,
    },
    Settings {
        clear_settings: bool,
        settings: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: StreamId,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: StreamId,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: StreamId,
        delta_window_size: u32,
    },
    Data {
        stream_id: StreamId,
        fin: bool,
        data: Bytes,
    },
}

impl Frame {
    /// The stream the frame belongs to, if it is a per-stream frame.
    pub fn stream_id(&self) -> Option<StreamId> {
        match self {
            Frame::SynStream { stream_id, .. }
            | Frame::SynReply { stream_id, .. }
            | Frame::RstStream { stream_id, .. }
            | Frame::Headers { stream_id, .. }
            | Frame::Data { stream_id, .. } => Some(*stream_id),
            Frame::WindowUpdate { stream_id, .. } if *stream_id != 0 => Some(*stream_id),
            _ => None,
        }
    }
}

/// A SPDY header block: an ordered list of name/value pairs.
///
/// Names are lowercase on the wire; [`Headers::append`] lowercases them and
/// lookups ignore case. A name that occurs several times is sent once with its
/// values joined by NUL, and a NUL-joined value is split again on decode, so a
/// Go `http.Header` with several values round-trips.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value, keeping any earlier values of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.entries.push((name, value.into()));
    }

    /// Builder form of [`Headers::append`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.append(name, value);
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All pairs in order; a multi-valued name yields one pair per value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of pairs (not distinct names).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (n, v) in iter {
            headers.append(n, v);
        }
        headers
    }
}

/// Which limit a header block broke; see [`FrameError::HeaderLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderLimit {
    /// Decompresses to more than [`MAX_HEADER_BLOCK_SIZE`] bytes.
    BlockSize,
    /// More than [`MAX_HEADER_ENTRIES`] entries.
    Entries,
    /// More than [`MAX_HEADER_BYTES`] name and value bytes.
    Bytes,
}

impl HeaderLimit {
    /// Whether the zlib context is still in step with the peer's after a
    /// block broke this limit, so the connection can go on. Only
    /// [`HeaderLimit::BlockSize`] stops inflating part-way through a block.
    pub fn compression_in_sync(self) -> bool {
        !matches!(self, HeaderLimit::BlockSize)
    }
}

impl fmt::Display for HeaderLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderLimit::BlockSize => {
                write!(f, "decompresses to more than {MAX_HEADER_BLOCK_SIZE} bytes")
            }
            HeaderLimit::Entries => write!(f, "more than {MAX_HEADER_ENTRIES} entries"),
            HeaderLimit::Bytes => {
                write!(f, "more than {MAX_HEADER_BYTES} bytes of names and values")
            }
        }
    }
}

/// Why a frame could not be decoded or encoded. A decode error leaves the
/// connection unusable (the zlib context or the framing is out of sync),
/// except [`FrameError::HeaderLimit`] with a limit whose
/// [`HeaderLimit::compression_in_sync`] is true: that frame was consumed
/// whole, and the next `decode` carries on after it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("frame payload of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("unsupported SPDY version {0} (only version 3 is supported)")]
    UnsupportedVersion(u16),
    #[error("invalid {kind} frame: {reason}")]
    Invalid {
        kind: &'static str,
        reason: &'static str,
    },
    #[error("malformed header block: {0}")]
    HeaderBlock(&'static str),
    /// `stream_id` is the frame's stream, `None` when the block was parsed on
    /// its own.
    #[error("header block refused: {limit}")]
    HeaderLimit {
        stream_id: Option<StreamId>,
        limit: HeaderLimit,
    },
    #[error(
        "header block needs zlib dictionary {found:#010x}, not the SPDY/3 dictionary ({expected:#010x})"
    )]
    WrongDictionary { found: u32, expected: u32 },
    #[error("header compression failed: {0}")]
    Compression(String),
}

fn invalid(kind: &'static str, reason: &'static str) -> FrameError {
    FrameError::Invalid { kind, reason }
}

/// SPDY/3.1 frame codec with the per-direction header compression state.
///
/// The zlib streams are created lazily, so a `Codec` used only for reading
/// never allocates a compressor and vice versa.
pub struct Codec {
    max_frame_size: usize,
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("max_frame_size", &self.max_frame_size)
            .finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// A codec limited to [`DEFAULT_MAX_FRAME_SIZE`].
    pub fn new() -> Self {
        Codec {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            compressor: None,
            decompressor: None,
        }
    }

    /// Sets the largest frame payload accepted or produced. Larger frames fail
    /// with [`FrameError::TooLarge`] as soon as their header is seen. Values
    /// above the 24-bit wire maximum are clamped to it.
    pub fn with_max_frame_size(mut self, max: usize) -> Self {
        self.max_frame_size = max.min(MAX_LENGTH_FIELD);
        self
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    fn parse(&mut self, frame: Bytes) -> Result<Option<Frame>, FrameError> {
        let mut hdr = &frame[..FRAME_HEADER_LEN];
        let first = hdr.get_u32();
        let flags = hdr.get_u8();
        let mut body = frame.slice(FRAME_HEADER_LEN..);

        if first & CONTROL_BIT == 0 {
            let stream_id = first & STREAM_ID_MASK;
            if stream_id == 0 {
                return Err(invalid("DATA", "stream id 0"));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }

        let version = ((first >> 16) & 0x7fff) as u16;
        let frame_type = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let fin = flags & FLAG_FIN != 0;
        let len = body.len();

        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                if len < 10 {
                    return Err(invalid("SYN_STREAM", "shorter than 10 bytes"));
                }
                let stream_id = nonzero_stream(body.get_u32(), "SYN_STREAM")?;
                let associated_stream_id = body.get_u32() & STREAM_ID_MASK;
                let priority = body.get_u8() >> 5;
                let slot = body.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    slot,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.decode_stream_headers(stream_id, &body)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let kind = if frame_type == TYPE_SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                if len < 4 {
                    return Err(invalid(kind, "shorter than 4 bytes"));
                }
                let stream_id = nonzero_stream(body.get_u32(), kind)?;
                let headers = self.decode_stream_headers(stream_id, &body)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                if len != 8 {
                    return Err(invalid("RST_STREAM", "length is not 8"));
                }
                Frame::RstStream {
                    stream_id: nonzero_stream(body.get_u32(), "RST_STREAM")?,
                    status: RstStatus(body.get_u32()),
                }
            }
            TYPE_SETTINGS => {
                if len < 4 {
                    return Err(invalid("SETTINGS", "shorter than 4 bytes"));
                }
                let count = body.get_u32() as usize;
                // Checked so a huge count cannot overflow on 32-bit targets.
                if count.checked_mul(8) != Some(body.len()) {
                    return Err(invalid("SETTINGS", "length does not match entry count"));
                }
                let settings = (0..count)
                    .map(|_| {
                        let flags_id = body.get_u32();
                        Setting {
                            flags: (flags_id >> 24) as u8,
                            id: flags_id & 0x00ff_ffff,
                            value: body.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings {
                    clear_settings: flags & FLAG_SETTINGS_CLEAR_SETTINGS != 0,
                    settings,
                }
            }
            TYPE_PING => {
                if len != 4 {
                    return Err(invalid("PING", "length is not 4"));
                }
                Frame::Ping { id: body.get_u32() }
            }
            TYPE_GOAWAY => {
                if len != 8 {
                    return Err(invalid("GOAWAY", "length is not 8"));
                }
                Frame::GoAway {
                    last_good_stream_id: body.get_u32() & STREAM_ID_MASK,
                    status: GoAwayStatus(body.get_u32()),
                }
            }
            TYPE_WINDOW_UPDATE => {
                if len != 8 {
                    return Err(invalid("WINDOW_UPDATE", "length is not 8"));
                }
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & STREAM_ID_MASK,
                    delta_window_size: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => {
                // The spec requires ignoring unknown control frames (NOOP from
                // SPDY/2, CREDENTIAL, future types).
                tracing::trace!(
                    frame_type = other,
                    len,
                    "skipping unknown SPDY control frame"
                );
                return Ok(None);
            }
        };
        Ok(Some(frame))
    }

    /// Decompresses and parses one header block (the part of a SYN_STREAM,
    /// SYN_REPLY or HEADERS frame after the stream ids) with this codec's
    /// receiving zlib context, enforcing the header limits. `decode` calls
    /// it; it is public so the parser can be exercised on its own.
    pub fn decode_header_block(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        if compressed.is_empty() {
            // Nothing was fed to the peer's compressor, so there is nothing to
            // advance ours by either.
            return Ok(Headers::new());
        }
        let plain = self.inflate(compressed)?;
        parse_header_block(&plain)
    }

    /// [`Codec::decode_header_block`] for a frame of `stream_id`, so a
    /// refusal names the stream to reset.
    fn decode_stream_headers(
        &mut self,
        stream_id: StreamId,
        compressed: &[u8],
    ) -> Result<Headers, FrameError> {
        self.decode_header_block(compressed).map_err(|e| match e {
            FrameError::HeaderLimit { limit, .. } => FrameError::HeaderLimit {
                stream_id: Some(stream_id),
                limit,
            },
            other => other,
        })
    }

    /// Compresses an already serialized header block with this codec's
    /// sending zlib context. The encoder does this for every frame with
    /// headers; it is public so tests can build blocks the encoder refuses
    /// to produce (NUL in a value, too many entries).
    pub fn compress_header_block(&mut self, raw: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.deflate(raw)
    }

    /// Decompresses one header block. The peer sync-flushes after each block,
    /// so all of its bytes are available once the whole input is consumed.
    ///
    /// Inflates through a fixed scratch buffer and checks the total before
    /// keeping each piece, so a zlib bomb costs at most
    /// [`MAX_HEADER_BLOCK_SIZE`] plus the scratch, never the bomb's size.
    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let inflater = self
            .decompressor
            .get_or_insert_with(|| Decompress::new(true));
        let mut scratch = [0u8; 8 * 1024];
        let mut out: Vec<u8> = Vec::new();
        let mut pos = 0;
        loop {
            let in_before = inflater.total_in();
            let out_before = inflater.total_out();
            let mut dictionary_set = false;
            if let Err(e) = inflater.decompress(&input[pos..], &mut scratch, FlushDecompress::Sync)
            {
                match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        inflater
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| FrameError::Compression(e.to_string()))?;
                        dictionary_set = true;
                    }
                    Some(found) => {
                        return Err(FrameError::WrongDictionary {
                            found,
                            expected: DICTIONARY_ID,
                        });
                    }
                    None => return Err(FrameError::Compression(e.to_string())),
                }
            }
            let consumed = (inflater.total_in() - in_before) as usize;
            // At most scratch.len(): inflate writes only into the slice.
            let produced = (inflater.total_out() - out_before) as usize;
            pos += consumed;
            if out.len() + produced > MAX_HEADER_BLOCK_SIZE {
                return Err(FrameError::HeaderLimit {
                    stream_id: None,
                    limit: HeaderLimit::BlockSize,
                });
            }
            out.extend_from_slice(&scratch[..produced]);
            if pos >= input.len() && produced < scratch.len() {
                // Input used up and inflate stopped with room to spare: the
                // block is complete.
                return Ok(out);
            }
            if consumed == 0 && produced == 0 && !dictionary_set {
                // Input left but inflate makes no progress: the peer ended its
                // zlib stream or sent garbage after it.
                return Err(FrameError::Compression(
                    "header block has data beyond the end of the zlib stream".into(),
                ));
            }
        }
    }

    fn deflate(&mut self, plain: &[u8]) -> Result<Vec<u8>, FrameError> {
        let deflater = match &mut self.compressor {
            Some(c) => c,
            None => {
                // Best compression matches spdystream; header blocks are tiny.
                let mut c = Compress::new(Compression::best(), true);
                c.set_dictionary(DICTIONARY)
                    .map_err(|e| FrameError::Compression(e.to_string()))?;
                self.compressor.insert(c)
            }
        };
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut pos = 0;
        loop {
            let in_before = deflater.total_in();
            deflater
                .compress_vec(&plain[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            pos += (deflater.total_in() - in_before) as usize;
            // Sync flush is complete once all input is taken and deflate
            // returned with output space left (zlib's avail_out != 0).
            if pos >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }

    fn encode_control(
        &mut self,
        frame_type: u16,
        flags: u8,
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        self.check_len(payload.len())?;
        dst.reserve(FRAME_HEADER_LEN + payload.len());
        dst.put_u32(CONTROL_BIT | (u32::from(VERSION) << 16) | u32::from(frame_type));
        put_flags_len(dst, flags, payload.len());
        dst.put_slice(payload);
        Ok(())
    }

    fn check_len(&self, size: usize) -> Result<(), FrameError> {
        if size > self.max_frame_size {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame_size,
            });
        }
        Ok(())
    }
}

fn nonzero_stream(raw: u32, kind: &'static str) -> Result<StreamId, FrameError> {
    match raw & STREAM_ID_MASK {
        0 => Err(invalid(kind, "stream id 0")),
        id => Ok(id),
    }
}

fn put_flags_len(dst: &mut BytesMut, flags: u8, len: usize) {
    // Callers checked len against max_frame_size, which is at most 2^24-1.
    dst.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Parses a decompressed header block, enforcing [`MAX_HEADER_BLOCK_SIZE`],
/// [`MAX_HEADER_ENTRIES`] and [`MAX_HEADER_BYTES`]. A value with NULs becomes
/// one entry per part (see [`Headers`]).
pub fn parse_header_block(mut buf: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        if buf.len() < 4 {
            return Err(FrameError::HeaderBlock("truncated length"));
        }
        let len = buf.get_u32() as usize;
        if buf.len() < len {
            return Err(FrameError::HeaderBlock("length runs past the block"));
        }
        let (field, rest) = buf.split_at(len);
        *buf = rest;
        Ok(field)
    }
    fn refused(limit: HeaderLimit) -> FrameError {
        FrameError::HeaderLimit {
            stream_id: None,
            limit,
        }
    }

    // Inflate already stops here; this covers blocks handed in directly.
    if buf.len() > MAX_HEADER_BLOCK_SIZE {
        return Err(refused(HeaderLimit::BlockSize));
    }
    if buf.len() < 4 {
        return Err(FrameError::HeaderBlock("missing pair count"));
    }
    let count = buf.get_u32() as usize;
    // Every pair yields at least one entry.
    if count > MAX_HEADER_ENTRIES {
        return Err(refused(HeaderLimit::Entries));
    }
    let mut headers = Headers {
        // Each pair needs at least 8 bytes, so a lying count cannot make us
        // over-allocate.
        entries: Vec::with_capacity(count.min(buf.len() / 8)),
    };
    let mut bytes = 0usize;
    for _ in 0..count {
        let name = std::str::from_utf8(take(&mut buf)?)
            .map_err(|_| FrameError::HeaderBlock("name is not UTF-8"))?;
        let value = std::str::from_utf8(take(&mut buf)?)
            .map_err(|_| FrameError::HeaderBlock("value is not UTF-8"))?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("empty name"));
        }
        // Names must be lowercase on the wire; accept others but store them
        // lowercased so lookups behave the same either way.
        let name = name.to_ascii_lowercase();
        for v in value.split('\0') {
            // Both limits are checked before the entry is allocated, so a
            // hostile block is refused having cost at most the limits.
            if headers.entries.len() >= MAX_HEADER_ENTRIES {
                return Err(refused(HeaderLimit::Entries));
            }
            bytes += name.len() + v.len();
            if bytes > MAX_HEADER_BYTES {
                return Err(refused(HeaderLimit::Bytes));
            }
            headers.entries.push((name.clone(), v.to_owned()));
        }
    }
    if !buf.is_empty() {
        return Err(FrameError::HeaderBlock(
            "trailing bytes after the last pair",
        ));
    }
    Ok(headers)
}

/// Serializes a header block (uncompressed), merging repeated names.
fn serialize_header_block(headers: &Headers) -> Result<Vec<u8>, FrameError> {
    // Group values per name in first-seen order; blocks are small, so the
    // quadratic scan is cheaper than hashing.
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in headers.iter() {
        if name.is_empty() || name.contains('\0') {
            return Err(FrameError::HeaderBlock("name is empty or contains NUL"));
        }
        if value.contains('\0') {
            return Err(FrameError::HeaderBlock("value contains NUL"));
        }
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => grouped.push((name, vec![value])),
        }
    }
    let mut out = Vec::new();
    put_len(&mut out, grouped.len())?;
    for (name, values) in grouped {
        put_len(&mut out, name.len())?;
        out.extend_from_slice(name.as_bytes());
        let joined = values.join("\0");
        put_len(&mut out, joined.len())?;
        out.extend_from_slice(joined.as_bytes());
    }
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), FrameError> {
    let len = u32::try_from(len).map_err(|_| FrameError::HeaderBlock("field too long"))?;
    out.put_u32(len);
    Ok(())
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        // Loops only to step over skipped (unknown) control frames.
        loop {
            if src.len() < FRAME_HEADER_LEN {
                src.reserve(FRAME_HEADER_LEN - src.len());
                return Ok(None);
            }
            let len = ((src[5] as usize) << 16) | ((src[6] as usize) << 8) | src[7] as usize;
            self.check_len(len)?;
            let total = FRAME_HEADER_LEN + len;
            if src.len() < total {
                src.reserve(total - src.len());
                return Ok(None);
            }
            let raw = src.split_to(total).freeze();
            if let Some(frame) = self.parse(raw)? {
                return Ok(Some(frame));
            }
        }
    }
}

impl Encoder<Frame> for Codec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                self.check_len(data.len())?;
                dst.reserve(FRAME_HEADER_LEN + data.len());
                dst.put_u32(stream_id & STREAM_ID_MASK);
                put_flags_len(dst, if fin { FLAG_FIN } else { 0 }, data.len());
                dst.put_slice(&data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                slot,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.deflate(&serialize_header_block(&headers)?)?;
                let mut payload = Vec::with_capacity(10 + block.len());
                payload.put_u32(stream_id & STREAM_ID_MASK);
                payload.put_u32(associated_stream_id & STREAM_ID_MASK);
                payload.put_u8((priority & 0x07) << 5);
                payload.put_u8(slot);
                payload.extend_from_slice(&block);
                let mut flags = if fin { FLAG_FIN } else { 0 };
                if unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                self.encode_control(TYPE_SYN_STREAM, flags, &payload, dst)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => self.encode_headers_like(TYPE_SYN_REPLY, stream_id, fin, &headers, dst),
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.encode_headers_like(TYPE_HEADERS, stream_id, fin, &headers, dst),
            Frame::RstStream { stream_id, status } => {
                let mut payload = [0u8; 8];
                let mut p = &mut payload[..];
                p.put_u32(stream_id & STREAM_ID_MASK);
                p.put_u32(status.0);
                self.encode_control(TYPE_RST_STREAM, 0, &payload, dst)
            }
            Frame::Settings {
                clear_settings,
                settings,
            } => {
                let mut payload = Vec::with_capacity(4 + settings.len() * 8);
                put_len(&mut payload, settings.len())?;
                for s in &settings {
                    payload.put_u32((u32::from(s.flags) << 24) | (s.id & 0x00ff_ffff));
                    payload.put_u32(s.value);
                }
                let flags = if clear_settings {
                    FLAG_SETTINGS_CLEAR_SETTINGS
                } else {
                    0
                };
                self.encode_control(TYPE_SETTINGS, flags, &payload, dst)
            }
            Frame::Ping { id } => self.encode_control(TYPE_PING, 0, &id.to_be_bytes(), dst),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut payload = [0u8; 8];
                let mut p = &mut payload[..];
                p.put_u32(last_good_stream_id & STREAM_ID_MASK);
                p.put_u32(status.0);
                self.encode_control(TYPE_GOAWAY, 0, &payload, dst)
            }
            Frame::WindowUpdate {
                stream_id,
                delta_window_size,
            } => {
                let mut payload = [0u8; 8];
                let mut p = &mut payload[..];
                p.put_u32(stream_id & STREAM_ID_MASK);
                p.put_u32(delta_window_size & 0x7fff_ffff);
                self.encode_control(TYPE_WINDOW_UPDATE, 0, &payload, dst)
            }
        }
    }
}

impl Codec {
    fn encode_headers_like(
        &mut self,
        frame_type: u16,
        stream_id: StreamId,
        fin: bool,
        headers: &Headers,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let block = self.deflate(&serialize_header_block(headers)?)?;
        let mut payload = Vec::with_capacity(4 + block.len());
        payload.put_u32(stream_id & STREAM_ID_MASK);
        payload.extend_from_slice(&block);
        self.encode_control(frame_type, if fin { FLAG_FIN } else { 0 }, &payload, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_round_trip_uncompressed() {
        let headers = Headers::new()
            .with("StreamType", "stdout")
            .with("port", "80")
            .with("port", "443");
        let raw = serialize_header_block(&headers).unwrap();
        // Two distinct names; "port" carries "80\0443".
        assert_eq!(&raw[..4], &[0, 0, 0, 2]);
        assert!(raw.windows(6).any(|w| w == b"80\x00443"));
        let parsed = parse_header_block(&raw).unwrap();
        assert_eq!(parsed.get("streamtype"), Some("stdout"));
        assert_eq!(parsed.get_all("port").collect::<Vec<_>>(), ["80", "443"]);
    }

    #[test]
    fn header_block_rejects_truncation_and_lies() {
        assert!(parse_header_block(&[0, 0, 0]).is_err());
        // Claims one pair but has none.
        assert!(parse_header_block(&[0, 0, 0, 1]).is_err());
        // Name length past the end.
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        // A huge count must not allocate by count.
        assert!(parse_header_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
        // Trailing garbage.
        let mut raw = serialize_header_block(&Headers::new().with("a", "b")).unwrap();
        raw.push(0);
        assert!(parse_header_block(&raw).is_err());
    }

    #[test]
    fn uppercase_names_are_lowercased_on_decode() {
        let raw = [
            0, 0, 0, 1, 0, 0, 0, 4, b'P', b'o', b'R', b't', 0, 0, 0, 2, b'8', b'0',
        ];
        let h = parse_header_block(&raw).unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), [("port", "80")]);
    }

    #[test]
    fn nul_in_value_is_refused_on_encode() {
        assert!(serialize_header_block(&Headers::new().with("a", "x\0y")).is_err());
        assert!(serialize_header_block(&Headers::new().with("", "x")).is_err());
    }
}
