//! Framing: protobuf's delimited form, a base-128 varint length followed by the message bytes.
//!
//! Decoding works on a buffer the caller fills from any transport (blocking or async), so the
//! sidecar and every Rust client share one implementation of the limits.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

/// A frame that can never be decoded; the connection must be closed after reporting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    #[error("frame length prefix is not a valid varint")]
    BadLength,
}

/// The most a reader reserves ahead for the rest of an incomplete frame.
pub const READ_AHEAD: usize = 256 * 1024;

/// Splits one complete frame off the front of `buf`, or returns `Ok(None)` if more bytes are
/// needed. A length above `max` is refused before its body is read, so a huge length prefix
/// cannot make the reader buffer unbounded memory.
pub fn decode_frame(buf: &mut BytesMut, max: u32) -> Result<Option<Bytes>, FrameError> {
    let mut len: u64 = 0;
    let mut prefix = 0usize;
    loop {
        let Some(&byte) = buf.get(prefix) else {
            return Ok(None);
        };
        if prefix == 9 && byte > 1 {
            return Err(FrameError::BadLength);
        }
        len |= u64::from(byte & 0x7f) << (7 * prefix);
        prefix += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if prefix == 10 {
            return Err(FrameError::BadLength);
        }
    }
    if len > u64::from(max) {
        return Err(FrameError::TooLarge { len, max });
    }
    let len = len as usize;
    if buf.len() < prefix + len {
        // Room for the next reads, not the whole declared length: a bare length prefix must not
        // make a reader hold 16 MiB it may never receive.
        buf.reserve((prefix + len - buf.len()).min(READ_AHEAD));
        return Ok(None);
    }
    buf.advance(prefix);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Appends `msg` as one frame.
pub fn encode_frame<M: Message>(msg: &M, out: &mut BytesMut) {
    // Writing into a BytesMut grows it, so this cannot fail.
    let _ = msg.encode_length_delimited(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{PingRequest, Request, request::Op};

    fn ping(id: u64) -> Request {
        Request {
            id,
            op: Some(Op::Ping(PingRequest {})),
        }
    }

    #[test]
    fn round_trips_pipelined_frames_split_anywhere() {
        let mut whole = BytesMut::new();
        for id in 0..50 {
            encode_frame(&ping(id * 1_000_003), &mut whole);
        }
        for chunk in [1usize, 2, 3, 7, 64] {
            let mut buf = BytesMut::new();
            let mut got = vec![];
            for piece in whole.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = decode_frame(&mut buf, 1024).unwrap() {
                    got.push(Request::decode(frame).unwrap().id);
                }
            }
            assert!(buf.is_empty());
            assert_eq!(got, (0..50).map(|id| id * 1_000_003).collect::<Vec<_>>());
        }
    }

    #[test]
    fn refuses_huge_length_before_reading_body() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x0f][..]);
        assert_eq!(
            decode_frame(&mut buf, 1024),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            })
        );
    }

    #[test]
    fn refuses_overlong_varint() {
        let mut buf = BytesMut::from(&[0x80u8; 11][..]);
        assert_eq!(decode_frame(&mut buf, 1024), Err(FrameError::BadLength));
    }

    #[test]
    fn a_bare_length_prefix_reserves_only_a_read_ahead() {
        let mut buf = BytesMut::from(&[0x80, 0x80, 0x80, 0x08][..]); // 16 MiB declared
        assert_eq!(decode_frame(&mut buf, 16 << 20), Ok(None));
        assert!(
            buf.capacity() <= READ_AHEAD + 4,
            "reserved {} bytes for a frame that has not arrived",
            buf.capacity()
        );
    }

    #[test]
    fn waits_for_incomplete_prefix_and_body() {
        let mut buf = BytesMut::from(&[0x80u8][..]);
        assert_eq!(decode_frame(&mut buf, 1 << 20), Ok(None));
        let mut buf = BytesMut::from(&[5u8, 1, 2][..]);
        assert_eq!(decode_frame(&mut buf, 1024), Ok(None));
        assert_eq!(buf.len(), 3, "an incomplete frame must stay buffered");
    }
}
