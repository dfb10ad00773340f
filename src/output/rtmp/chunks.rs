//! The client's RTMP chunk stream, read header by header ahead of rml_rtmp, sans-IO.
//!
//! rml_rtmp reserves a message's announced length (up to 16 MiB) on its first chunk and holds
//! every chunk until the last, before anyone has shown a token: so what a connection may make
//! livelens hold is decided here, on the announced length, before a byte of the message is
//! handed on. The framing follows rml_rtmp's own exactly (one message under way for the whole
//! connection, a chunk's length taken from its stream's last header, `SetChunkSize` applied
//! when its message ends), so both agree on where every header is; chunks of two messages
//! interleaved, which the library cannot follow, are refused here.

use std::collections::HashMap;

use crate::media::rtp_video::MAX_ACCESS_UNIT;

/// The longest message a connection may announce before its `publish` is accepted: 16 KiB.
/// Before then only commands and control messages are legitimate (FFmpeg's and OBS's
/// `connect` are a few hundred bytes).
pub const MAX_MESSAGE_BEFORE_PUBLISH: u32 = 16 << 10;
/// The most messages a connection may send before its `publish` is accepted: 64 (FFmpeg and
/// OBS send about ten). Each may leave state behind in the library (`createStream` adds a
/// stream for good), so their number is bounded as well as their size.
pub const MAX_MESSAGES_BEFORE_PUBLISH: u32 = 64;
/// The longest message a publisher may announce: the largest video tag `flv.rs` takes (an
/// 8 MiB access unit and its 5-byte tag header). Anything longer could only be dropped.
pub const MAX_MESSAGE: u32 = MAX_ACCESS_UNIT as u32 + 5;
/// Chunk streams a connection may use: 64 (encoders use about five). The library keeps the
/// last header of each for good.
pub const MAX_CHUNK_STREAMS: usize = 64;

/// The largest chunk size RTMP allows (31 bits).
const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;
/// A timestamp field of this value means a 4-byte extended timestamp follows.
const EXTENDED: u32 = 0x00ff_ffff;

/// Why a connection's chunk stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("a message of {length} bytes announced (at most {limit} here)")]
    TooLarge { length: u32, limit: u32 },
    #[error("more than {MAX_MESSAGES_BEFORE_PUBLISH} messages before publishing")]
    TooManyMessages,
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    #[error("a continuation chunk on chunk stream {0}, which has no previous header")]
    NoPreviousHeader(u32),
    #[error("chunks of two messages interleaved")]
    Interleaved,
    #[error("a chunk size of {0} (1 to 2^31 - 1 allowed)")]
    BadChunkSize(u32),
    #[error("a SetChunkSize message shorter than 4 bytes")]
    ShortSetChunkSize,
}

/// What a chunk stream's last header said (type 1–3 headers inherit it).
#[derive(Debug, Clone, Copy, Default)]
struct Header {
    timestamp_field: u32,
    length: u32,
    type_id: u8,
}

/// Checks a connection's chunk stream; feed it every byte that follows the handshake, in
/// order, before the session reads them.
#[derive(Debug)]
pub struct ChunkGuard {
    chunk_size: u32,
    streams: HashMap<u32, Header>,
    /// The header being read (at most 3 + 11 + 4 bytes).
    head: [u8; 18],
    head_len: usize,
    /// The chunk whose payload is being read: its header and bytes still to come.
    chunk: Option<(Header, u32)>,
    /// Bytes of the message under way (the library keeps one for the whole connection).
    received: u32,
    /// A `SetChunkSize` message's payload.
    new_chunk_size: [u8; 4],
    messages: u32,
    publishing: bool,
}

impl Default for ChunkGuard {
    fn default() -> Self {
        ChunkGuard::new()
    }
}

impl ChunkGuard {
    pub fn new() -> ChunkGuard {
        ChunkGuard {
            chunk_size: 128,
            streams: HashMap::new(),
            head: [0; 18],
            head_len: 0,
            chunk: None,
            received: 0,
            new_chunk_size: [0; 4],
            messages: 0,
            publishing: false,
        }
    }

    /// The connection's `publish` was accepted: from now on messages up to [`MAX_MESSAGE`].
    pub fn publishing(&mut self) {
        self.publishing = true;
    }

    /// The longest message that may be announced now.
    pub fn limit(&self) -> u32 {
        if self.publishing {
            MAX_MESSAGE
        } else {
            MAX_MESSAGE_BEFORE_PUBLISH
        }
    }

    /// Reads `bytes`; an error means the connection must end before the session sees them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ChunkError> {
        while !bytes.is_empty() {
            if let Some((header, left)) = self.chunk.as_mut() {
                let n = (*left as usize).min(bytes.len());
                if header.type_id == 1 {
                    for (i, b) in bytes[..n].iter().enumerate() {
                        if let Some(slot) = self.new_chunk_size.get_mut(self.received as usize + i)
                        {
                            *slot = *b;
                        }
                    }
                }
                *left -= n as u32;
                self.received += n as u32;
                bytes = &bytes[n..];
                if *left == 0 {
                    self.end_chunk()?;
                }
                continue;
            }
            self.head[self.head_len] = bytes[0];
            self.head_len += 1;
            bytes = &bytes[1..];
            if self.header_length()? == Some(self.head_len) {
                self.start_chunk()?;
            }
        }
        Ok(())
    }

    /// The chunk stream id and where the message header starts, once the basic header is in.
    fn basic_header(&self) -> Option<(u32, usize)> {
        let head = &self.head[..self.head_len];
        match head.first()? & 0x3f {
            0 => Some((*head.get(1)? as u32 + 64, 2)),
            1 => Some((*head.get(2)? as u32 * 256 + *head.get(1)? as u32 + 64, 3)),
            id => Some((id as u32, 1)),
        }
    }

    /// The whole header's length, once enough of it is in to tell.
    fn header_length(&self) -> Result<Option<usize>, ChunkError> {
        let Some((csid, at)) = self.basic_header() else {
            return Ok(None);
        };
        let format = self.head[0] >> 6;
        let end = at + [11, 7, 3, 0][format as usize];
        let timestamp_field = if format == 3 {
            self.streams
                .get(&csid)
                .ok_or(ChunkError::NoPreviousHeader(csid))?
                .timestamp_field
        } else if self.head_len < end {
            return Ok(None);
        } else {
            u24(&self.head[at..])
        };
        Ok(Some(if timestamp_field >= EXTENDED {
            end + 4
        } else {
            end
        }))
    }

    fn start_chunk(&mut self) -> Result<(), ChunkError> {
        let (csid, at) = self.basic_header().expect("a whole header");
        let format = self.head[0] >> 6;
        self.head_len = 0;
        let mut header = match format {
            0 => Header::default(),
            _ => *self
                .streams
                .get(&csid)
                .ok_or(ChunkError::NoPreviousHeader(csid))?,
        };
        if format <= 2 {
            header.timestamp_field = u24(&self.head[at..]);
        }
        if format <= 1 {
            header.length = u24(&self.head[at + 3..]);
            header.type_id = self.head[at + 6];
        }
        let limit = self.limit();
        if header.length > limit {
            return Err(ChunkError::TooLarge {
                length: header.length,
                limit,
            });
        }
        // The library's own arithmetic for the chunk's payload length.
        let remaining = header
            .length
            .checked_sub(self.received)
            .ok_or(ChunkError::Interleaved)?;
        let length = if header.length > self.chunk_size {
            remaining.min(self.chunk_size)
        } else {
            header.length
        };
        if length > remaining {
            return Err(ChunkError::Interleaved);
        }
        if self.streams.len() >= MAX_CHUNK_STREAMS && !self.streams.contains_key(&csid) {
            return Err(ChunkError::TooManyChunkStreams);
        }
        self.streams.insert(csid, header);
        self.chunk = Some((header, length));
        if length == 0 {
            self.end_chunk()?;
        }
        Ok(())
    }

    fn end_chunk(&mut self) -> Result<(), ChunkError> {
        let (header, _) = self.chunk.take().expect("a chunk under way");
        if self.received < header.length {
            return Ok(());
        }
        self.received = 0;
        if !self.publishing {
            self.messages += 1;
            if self.messages > MAX_MESSAGES_BEFORE_PUBLISH {
                return Err(ChunkError::TooManyMessages);
            }
        }
        if header.type_id == 1 {
            if header.length < 4 {
                return Err(ChunkError::ShortSetChunkSize);
            }
            let size = u32::from_be_bytes(self.new_chunk_size);
            if size == 0 || size > MAX_CHUNK_SIZE {
                return Err(ChunkError::BadChunkSize(size));
            }
            self.chunk_size = size;
        }
        Ok(())
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn payload(type_id: u8, stream: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(40),
            type_id,
            message_stream_id: stream,
            data: data.into(),
        }
    }

    /// A type 0 header on chunk stream 3, as the attack sends it.
    fn type0(length: u32, type_id: u8) -> Vec<u8> {
        let l = length.to_be_bytes();
        vec![0x03, 0, 0, 0, l[1], l[2], l[3], type_id, 0, 0, 0, 0]
    }

    #[test]
    fn a_message_over_the_limit_is_refused_at_its_header() {
        let mut guard = ChunkGuard::new();
        // All but the header's last byte: nothing to judge yet.
        // 16 MiB - 1: the most a header can say.
        let head = type0((16 << 20) - 1, 20);
        guard.feed(&head[..head.len() - 1]).unwrap();
        assert_eq!(
            guard.feed(&head[head.len() - 1..]),
            Err(ChunkError::TooLarge {
                length: (16 << 20) - 1,
                limit: MAX_MESSAGE_BEFORE_PUBLISH
            })
        );
        let mut guard = ChunkGuard::new();
        guard.publishing();
        assert_eq!(
            guard.feed(&type0(MAX_MESSAGE + 1, 9)),
            Err(ChunkError::TooLarge {
                length: MAX_MESSAGE + 1,
                limit: MAX_MESSAGE
            })
        );
        let mut guard = ChunkGuard::new();
        guard.feed(&type0(MAX_MESSAGE_BEFORE_PUBLISH, 20)).unwrap();
    }

    /// Whatever the library's serializer makes (chunk sizes, compressed headers, extended
    /// timestamps, byte by byte or at once) passes, and a publisher's big video tag too.
    #[test]
    fn what_the_library_writes_passes_in_any_split() {
        let mut serializer = ChunkSerializer::new();
        let mut bytes = Vec::new();
        let add = |s: &mut ChunkSerializer, p: MessagePayload| {
            s.serialize(&p, false, false).unwrap().bytes
        };
        bytes.extend(add(&mut serializer, payload(20, 0, vec![2; 300])));
        bytes.extend(add(&mut serializer, payload(20, 0, vec![3; 100])));
        // SetChunkSize 4096, then the serializer uses it.
        let packet = serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .unwrap();
        bytes.extend(packet.bytes);
        bytes.extend(add(&mut serializer, payload(20, 1, vec![4; 10_000])));
        let mut late = payload(9, 1, vec![5; 5_000]);
        late.timestamp = RtmpTimestamp::new(0x0100_0000);
        bytes.extend(add(&mut serializer, late));
        bytes.extend(add(&mut serializer, payload(8, 1, vec![7])));
        for split in [1, 7, 128, 4096, bytes.len()] {
            let mut guard = ChunkGuard::new();
            for part in bytes.chunks(split) {
                guard.feed(part).unwrap();
            }
            assert_eq!(guard.chunk_size, 4096);
            assert_eq!(guard.messages, 6);
            assert!(guard.chunk.is_none() && guard.head_len == 0 && guard.received == 0);
        }
        // After publish, a 6 MiB tag.
        let mut guard = ChunkGuard::new();
        guard.feed(&bytes).unwrap();
        guard.publishing();
        let tag = serializer
            .serialize(&payload(9, 1, vec![6; 6 << 20]), false, false)
            .unwrap();
        guard.feed(&tag.bytes).unwrap();
    }

    #[test]
    fn before_publishing_messages_and_chunk_streams_are_counted() {
        let mut serializer = ChunkSerializer::new();
        let mut guard = ChunkGuard::new();
        for i in 0..MAX_MESSAGES_BEFORE_PUBLISH {
            let p = serializer
                .serialize(&payload(20, 0, vec![i as u8; 30]), false, false)
                .unwrap();
            guard.feed(&p.bytes).unwrap();
        }
        let p = serializer
            .serialize(&payload(20, 0, vec![0; 30]), false, false)
            .unwrap();
        assert_eq!(guard.feed(&p.bytes), Err(ChunkError::TooManyMessages));

        let mut guard = ChunkGuard::new();
        guard.publishing();
        for csid in 0..MAX_CHUNK_STREAMS as u32 {
            // Two-byte basic headers: chunk streams 64 and up.
            guard
                .feed(&[0x00, csid as u8, 0, 0, 0, 0, 0, 1, 20, 0, 0, 0, 0, 7])
                .unwrap();
        }
        assert_eq!(
            guard.feed(&[0x00, 200, 0, 0, 0, 0, 0, 1, 20, 0, 0, 0, 0, 7]),
            Err(ChunkError::TooManyChunkStreams)
        );
    }

    #[test]
    fn hostile_framing_is_refused() {
        // A continuation with nothing before it.
        assert_eq!(
            ChunkGuard::new().feed(&[0xc5]),
            Err(ChunkError::NoPreviousHeader(5))
        );
        // A second message started while the first is under way.
        let mut guard = ChunkGuard::new();
        let mut bytes = type0(1000, 20);
        bytes.extend([0; 128]);
        bytes.extend([0x04, 0, 0, 0, 0, 0, 10, 20, 0, 0, 0, 0]);
        assert_eq!(guard.feed(&bytes), Err(ChunkError::Interleaved));
        // Chunk sizes of 0, 2^31 and a SetChunkSize without its 4 bytes.
        for (size, error) in [
            (0u32, ChunkError::BadChunkSize(0)),
            (0x8000_0000, ChunkError::BadChunkSize(0x8000_0000)),
        ] {
            let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
            bytes.extend(size.to_be_bytes());
            assert_eq!(ChunkGuard::new().feed(&bytes), Err(error));
        }
        assert_eq!(
            ChunkGuard::new().feed(&[0x02, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 1]),
            Err(ChunkError::ShortSetChunkSize)
        );
    }
}
