//! Peer wire message codec (BEP 3), with the Fast extension (BEP 6), the DHT `port` message
//! (BEP 5) and the extension protocol envelope (BEP 10).
//!
//! [`Decoder`] is a pure incremental decoder: feed it bytes (or hand it a whole receive
//! buffer, [`Decoder::set_buffer`]) and pull [`Message`]s out. Every length the peer claims is checked
//! against a per-message bound *before* any buffer is reserved for it. Piece payloads are
//! split off the receive buffer as [`Bytes`] without copying.
//!
//! [`validate`] / [`validate_in`] check a well-formed message against what we know of the
//! torrent (number of pieces, piece size); an impossible message is a reason to drop the peer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::PeerError;

/// Standard block size we request (BEP 3 practice).
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest request/piece block we accept or serve (larger requests are a drop reason).
pub const MAX_BLOCK: u32 = 128 * 1024;
/// Largest bitfield (bytes): 8 Mi pieces, far beyond any real torrent.
pub const MAX_BITFIELD: u32 = 1024 * 1024;
/// Largest extension message (ut_metadata data is 16 KiB + a small dict; handshakes and PEX
/// are small). Generous for unknown extensions.
pub const MAX_EXTENDED: u32 = 1024 * 1024;
/// Largest message of any kind (length prefix value).
pub const MAX_MESSAGE_LEN: u32 = 1 + MAX_BITFIELD;

pub const ID_CHOKE: u8 = 0;
pub const ID_UNCHOKE: u8 = 1;
pub const ID_INTERESTED: u8 = 2;
pub const ID_NOT_INTERESTED: u8 = 3;
pub const ID_HAVE: u8 = 4;
pub const ID_BITFIELD: u8 = 5;
pub const ID_REQUEST: u8 = 6;
pub const ID_PIECE: u8 = 7;
pub const ID_CANCEL: u8 = 8;
pub const ID_PORT: u8 = 9;
pub const ID_SUGGEST: u8 = 0x0D;
pub const ID_HAVE_ALL: u8 = 0x0E;
pub const ID_HAVE_NONE: u8 = 0x0F;
pub const ID_REJECT: u8 = 0x10;
pub const ID_ALLOWED_FAST: u8 = 0x11;
pub const ID_EXTENDED: u8 = 20;

/// A block address: piece index, offset within the piece, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

/// One peer wire message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRef),
    Piece {
        index: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRef),
    /// DHT port (BEP 5).
    Port(u16),
    // Fast extension (BEP 6).
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(u32),
    /// Extension protocol (BEP 10): `id` 0 is the extended handshake.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// A message id we don't know; its payload was skipped (BEP 3: ignore unknown messages).
    Unknown {
        id: u8,
        len: u32,
    },
}

impl Message {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::KeepAlive => "keep-alive",
            Message::Choke => "choke",
            Message::Unchoke => "unchoke",
            Message::Interested => "interested",
            Message::NotInterested => "not_interested",
            Message::Have(_) => "have",
            Message::Bitfield(_) => "bitfield",
            Message::Request(_) => "request",
            Message::Piece { .. } => "piece",
            Message::Cancel(_) => "cancel",
            Message::Port(_) => "port",
            Message::Suggest(_) => "suggest",
            Message::HaveAll => "have_all",
            Message::HaveNone => "have_none",
            Message::Reject(_) => "reject",
            Message::AllowedFast(_) => "allowed_fast",
            Message::Extended { .. } => "extended",
            Message::Unknown { .. } => "unknown",
        }
    }
}

/// The bound on a message's length prefix (id byte included) given its id, or the exact
/// length for fixed-size messages. Checked as soon as the id byte is buffered.
fn length_rule(id: u8) -> LenRule {
    match id {
        ID_CHOKE | ID_UNCHOKE | ID_INTERESTED | ID_NOT_INTERESTED | ID_HAVE_ALL | ID_HAVE_NONE => {
            LenRule::Exact(1)
        }
        ID_HAVE | ID_SUGGEST | ID_ALLOWED_FAST => LenRule::Exact(5),
        ID_REQUEST | ID_CANCEL | ID_REJECT => LenRule::Exact(13),
        ID_PORT => LenRule::Exact(3),
        ID_PIECE => LenRule::Range(9, 9 + MAX_BLOCK),
        ID_BITFIELD => LenRule::Range(1, 1 + MAX_BITFIELD),
        ID_EXTENDED => LenRule::Range(2, 1 + MAX_EXTENDED),
        _ => LenRule::Range(1, MAX_MESSAGE_LEN),
    }
}

enum LenRule {
    Exact(u32),
    Range(u32, u32),
}

/// Incremental decoder. Holds the undecoded received bytes; bounded by
/// [`MAX_MESSAGE_LEN`] + 4 plus whatever the caller feeds beyond one message (callers read
/// in bounded chunks). The bytes are an immutable [`Bytes`]: messages are split off it
/// without copying, and a new receive buffer starts with the undecoded rest
/// ([`Decoder::pending`]) followed by the newly read bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Bytes,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the peer (copies what is buffered; for tests and small
    /// inputs, the reader uses [`Decoder::set_buffer`]).
    pub fn feed(&mut self, data: &[u8]) {
        let mut v = Vec::with_capacity(self.buf.len() + data.len());
        v.extend_from_slice(&self.buf);
        v.extend_from_slice(data);
        self.buf = Bytes::from(v);
    }

    /// The buffered bytes not decoded yet (at most one partial message once
    /// [`Decoder::next_message`] returned `None`).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Replaces the buffer with `buf`, which must start with the [`Decoder::pending`] bytes
    /// (the caller copied them to its front and read after them).
    pub fn set_buffer(&mut self, buf: Bytes) {
        debug_assert!(buf.starts_with(&self.buf));
        self.buf = buf;
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the message in progress needs (its length already checked
    /// against [`MAX_MESSAGE_LEN`]), so the next read can be sized to take it whole.
    pub fn missing(&self) -> usize {
        match self.peek_len() {
            Some(len) if len <= MAX_MESSAGE_LEN => {
                (len as usize + 4).saturating_sub(self.buf.len())
            }
            _ => 0,
        }
    }

    fn peek_len(&self) -> Option<u32> {
        let b = self.buf.get(..4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Decodes the next complete message, `Ok(None)` if more bytes are needed. An `Err` is
    /// final: the stream is out of sync or hostile, drop the peer.
    pub fn next_message(&mut self) -> Result<Option<Message>, PeerError> {
        let Some(len) = self.peek_len() else {
            return Ok(None);
        };
        if len == 0 {
            self.buf.advance(4);
            return Ok(Some(Message::KeepAlive));
        }
        if len > MAX_MESSAGE_LEN {
            return Err(PeerError::MessageTooLong {
                id: self.buf.get(4).copied(),
                len,
            });
        }
        let Some(&id) = self.buf.get(4) else {
            return Ok(None);
        };
        match length_rule(id) {
            LenRule::Exact(n) if len != n => return Err(PeerError::BadLength { id, len }),
            LenRule::Range(lo, _) if len < lo => return Err(PeerError::BadLength { id, len }),
            LenRule::Range(_, hi) if len > hi => {
                return Err(PeerError::MessageTooLong { id: Some(id), len })
            }
            _ => {}
        }
        let total = 4 + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(5);
        let mut body = self.buf.split_to(len as usize - 1);
        if self.buf.is_empty() {
            // Let go of the receive buffer now rather than with the next one.
            self.buf = Bytes::new();
        }
        let msg = match id {
            ID_CHOKE => Message::Choke,
            ID_UNCHOKE => Message::Unchoke,
            ID_INTERESTED => Message::Interested,
            ID_NOT_INTERESTED => Message::NotInterested,
            ID_HAVE_ALL => Message::HaveAll,
            ID_HAVE_NONE => Message::HaveNone,
            ID_HAVE => Message::Have(body.get_u32()),
            ID_SUGGEST => Message::Suggest(body.get_u32()),
            ID_ALLOWED_FAST => Message::AllowedFast(body.get_u32()),
            ID_REQUEST => Message::Request(block(&mut body)),
            ID_CANCEL => Message::Cancel(block(&mut body)),
            ID_REJECT => Message::Reject(block(&mut body)),
            ID_PORT => Message::Port(body.get_u16()),
            ID_BITFIELD => Message::Bitfield(body),
            ID_PIECE => {
                let index = body.get_u32();
                let begin = body.get_u32();
                Message::Piece {
                    index,
                    begin,
                    data: body,
                }
            }
            ID_EXTENDED => {
                let ext = body.get_u8();
                Message::Extended {
                    id: ext,
                    payload: body,
                }
            }
            other => Message::Unknown { id: other, len },
        };
        Ok(Some(msg))
    }
}

/// Reads index/begin/length; the caller checked the body is exactly 12 bytes.
fn block(body: &mut Bytes) -> BlockRef {
    BlockRef {
        index: body.get_u32(),
        begin: body.get_u32(),
        length: body.get_u32(),
    }
}

/// Appends the encoding of `msg` to `out`. For large piece payloads prefer
/// [`encode_piece_header`] and write the data separately (no copy).
pub fn encode(msg: &Message, out: &mut BytesMut) {
    fn simple(out: &mut BytesMut, id: u8) {
        out.put_u32(1);
        out.put_u8(id);
    }
    fn with_u32(out: &mut BytesMut, id: u8, v: u32) {
        out.put_u32(5);
        out.put_u8(id);
        out.put_u32(v);
    }
    fn with_block(out: &mut BytesMut, id: u8, b: &BlockRef) {
        out.put_u32(13);
        out.put_u8(id);
        out.put_u32(b.index);
        out.put_u32(b.begin);
        out.put_u32(b.length);
    }
    match msg {
        Message::KeepAlive => out.put_u32(0),
        Message::Choke => simple(out, ID_CHOKE),
        Message::Unchoke => simple(out, ID_UNCHOKE),
        Message::Interested => simple(out, ID_INTERESTED),
        Message::NotInterested => simple(out, ID_NOT_INTERESTED),
        Message::HaveAll => simple(out, ID_HAVE_ALL),
        Message::HaveNone => simple(out, ID_HAVE_NONE),
        Message::Have(i) => with_u32(out, ID_HAVE, *i),
        Message::Suggest(i) => with_u32(out, ID_SUGGEST, *i),
        Message::AllowedFast(i) => with_u32(out, ID_ALLOWED_FAST, *i),
        Message::Request(b) => with_block(out, ID_REQUEST, b),
        Message::Cancel(b) => with_block(out, ID_CANCEL, b),
        Message::Reject(b) => with_block(out, ID_REJECT, b),
        Message::Port(p) => {
            out.put_u32(3);
            out.put_u8(ID_PORT);
            out.put_u16(*p);
        }
        Message::Bitfield(bits) => {
            out.put_u32(1 + bits.len() as u32);
            out.put_u8(ID_BITFIELD);
            out.put_slice(bits);
        }
        Message::Piece { index, begin, data } => {
            encode_piece_header(*index, *begin, data.len() as u32, out);
            out.put_slice(data);
        }
        Message::Extended { id, payload } => {
            out.put_u32(2 + payload.len() as u32);
            out.put_u8(ID_EXTENDED);
            out.put_u8(*id);
            out.put_slice(payload);
        }
        // We never send unknown messages; encode as keep-alive-free no-op.
        Message::Unknown { .. } => {}
    }
}

/// Writes the 13-byte header of a `piece` message carrying `len` bytes of data; the caller
/// writes the data itself (e.g. with a vectored write straight from the storage buffer).
pub fn encode_piece_header(index: u32, begin: u32, len: u32, out: &mut BytesMut) {
    out.put_u32(9 + len);
    out.put_u8(ID_PIECE);
    out.put_u32(index);
    out.put_u32(begin);
}

/// Writes an extension message (BEP 10) with the given (remote-assigned) id.
pub fn encode_extended(id: u8, payload: &[u8], out: &mut BytesMut) {
    out.put_u32(2 + payload.len() as u32);
    out.put_u8(ID_EXTENDED);
    out.put_u8(id);
    out.put_slice(payload);
}

/// What we know of the torrent, for [`validate_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub num_pieces: u32,
    pub piece_length: u32,
    pub total_length: u64,
}

impl Geometry {
    /// Size of piece `index` (the last one may be short); 0 if out of range.
    pub fn piece_size(&self, index: u32) -> u32 {
        if index >= self.num_pieces {
            return 0;
        }
        if index + 1 < self.num_pieces {
            return self.piece_length;
        }
        let before = u64::from(self.piece_length) * u64::from(index);
        (self.total_length.saturating_sub(before)).min(u64::from(self.piece_length)) as u32
    }
}

/// Length in bytes of a bitfield for `num_pieces` pieces.
pub fn bitfield_len(num_pieces: u32) -> usize {
    (num_pieces as usize).div_ceil(8)
}

fn check_index(index: u32, num_pieces: u32) -> Result<(), PeerError> {
    if index >= num_pieces {
        return Err(PeerError::IndexOutOfRange { index, num_pieces });
    }
    Ok(())
}

fn check_block(b: &BlockRef, num_pieces: u32) -> Result<(), PeerError> {
    check_index(b.index, num_pieces)?;
    if b.length == 0 || b.length > MAX_BLOCK {
        return Err(PeerError::BadBlockLength(b.length));
    }
    if b.begin.checked_add(b.length).is_none() {
        return Err(PeerError::BlockOutsidePiece(*b));
    }
    Ok(())
}

/// Checks a decoded message against the number of pieces: piece indices in range, bitfield
/// of the right length with spare bits clear, block lengths in `1..=128 KiB`.
pub fn validate(msg: &Message, num_pieces: u32) -> Result<(), PeerError> {
    match msg {
        Message::Have(i) | Message::Suggest(i) | Message::AllowedFast(i) => {
            check_index(*i, num_pieces)
        }
        Message::Bitfield(bits) => {
            let want = bitfield_len(num_pieces);
            if bits.len() != want {
                return Err(PeerError::BitfieldLength {
                    got: bits.len(),
                    expected: want,
                });
            }
            let spare = (want * 8) as u64 - u64::from(num_pieces);
            if spare > 0 {
                let mask = (1u16 << spare) as u8 - 1;
                if bits.last().is_some_and(|b| b & mask != 0) {
                    return Err(PeerError::BitfieldSpareBits);
                }
            }
            Ok(())
        }
        Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => check_block(b, num_pieces),
        Message::Piece { index, begin, data } => check_block(
            &BlockRef {
                index: *index,
                begin: *begin,
                length: data.len() as u32,
            },
            num_pieces,
        ),
        _ => Ok(()),
    }
}

/// [`validate`] plus: blocks must lie inside their piece.
pub fn validate_in(msg: &Message, g: &Geometry) -> Result<(), PeerError> {
    validate(msg, g.num_pieces)?;
    let b = match msg {
        Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => *b,
        Message::Piece { index, begin, data } => BlockRef {
            index: *index,
            begin: *begin,
            length: data.len() as u32,
        },
        _ => return Ok(()),
    };
    // begin + length cannot overflow: validate checked it.
    if b.begin + b.length > g.piece_size(b.index) {
        return Err(PeerError::BlockOutsidePiece(b));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Message> {
        let b = BlockRef {
            index: 1,
            begin: 16384,
            length: 16384,
        };
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request(b),
            Message::Piece {
                index: 2,
                begin: 0,
                data: Bytes::from(vec![7u8; 16384]),
            },
            Message::Cancel(b),
            Message::Port(6881),
            Message::Suggest(3),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject(b),
            Message::AllowedFast(4),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"de"),
            },
        ]
    }

    #[test]
    fn round_trip_every_message_byte_by_byte() {
        let msgs = all_messages();
        let mut out = BytesMut::new();
        for m in &msgs {
            encode(m, &mut out);
        }
        // Whole buffer at once.
        let mut d = Decoder::new();
        d.feed(&out);
        for m in &msgs {
            assert_eq!(d.next_message().unwrap().as_ref(), Some(m));
        }
        assert_eq!(d.next_message().unwrap(), None);
        // One byte at a time.
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for byte in out.iter() {
            d.feed(&[*byte]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn wire_bytes_match_bep3() {
        let mut out = BytesMut::new();
        encode(&Message::Have(0x01020304), &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 5, 4, 1, 2, 3, 4]);
        out.clear();
        encode(&Message::HaveAll, &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 1, 0x0e]);
    }

    #[test]
    fn oversize_rejected_before_buffering() {
        let mut d = Decoder::new();
        d.feed(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_message(),
            Err(PeerError::MessageTooLong { .. })
        ));
        // A piece claiming 1 MiB of data is refused once the id byte arrives.
        let mut d = Decoder::new();
        d.feed(&(1024 * 1024u32).to_be_bytes());
        assert_eq!(d.next_message().unwrap(), None);
        d.feed(&[ID_PIECE]);
        assert!(matches!(
            d.next_message(),
            Err(PeerError::MessageTooLong { .. })
        ));
        // A have with the wrong length is out of sync.
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 6, ID_HAVE]);
        assert!(matches!(d.next_message(), Err(PeerError::BadLength { .. })));
    }

    #[test]
    fn unknown_ids_skipped() {
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 3, 99, 1, 2, 0, 0, 0, 1, ID_UNCHOKE]);
        assert_eq!(
            d.next_message().unwrap(),
            Some(Message::Unknown { id: 99, len: 3 })
        );
        assert_eq!(d.next_message().unwrap(), Some(Message::Unchoke));
    }

    #[test]
    fn validation() {
        assert!(validate(&Message::Have(9), 10).is_ok());
        assert!(matches!(
            validate(&Message::Have(10), 10),
            Err(PeerError::IndexOutOfRange { .. })
        ));
        // 10 pieces: 2 bytes, 6 spare bits.
        let ok = Message::Bitfield(Bytes::from_static(&[0xff, 0xc0]));
        assert!(validate(&ok, 10).is_ok());
        let spare = Message::Bitfield(Bytes::from_static(&[0xff, 0xc1]));
        assert!(matches!(
            validate(&spare, 10),
            Err(PeerError::BitfieldSpareBits)
        ));
        let short = Message::Bitfield(Bytes::from_static(&[0xff]));
        assert!(matches!(
            validate(&short, 10),
            Err(PeerError::BitfieldLength { .. })
        ));
        assert!(validate(&Message::Bitfield(Bytes::from_static(&[0xff])), 8).is_ok());
        let big = Message::Request(BlockRef {
            index: 0,
            begin: 0,
            length: MAX_BLOCK + 1,
        });
        assert!(matches!(
            validate(&big, 10),
            Err(PeerError::BadBlockLength(_))
        ));
        let wrap = Message::Request(BlockRef {
            index: 0,
            begin: u32::MAX,
            length: 2,
        });
        assert!(validate(&wrap, 10).is_err());
        let g = Geometry {
            num_pieces: 2,
            piece_length: 32768,
            total_length: 40000,
        };
        assert_eq!(g.piece_size(1), 40000 - 32768);
        let past_end = Message::Request(BlockRef {
            index: 1,
            begin: 0,
            length: 16384,
        });
        assert!(validate_in(&past_end, &g).is_err());
        let fine = Message::Request(BlockRef {
            index: 0,
            begin: 16384,
            length: 16384,
        });
        assert!(validate_in(&fine, &g).is_ok());
    }

    #[test]
    fn piece_payload_is_not_copied() {
        let mut out = BytesMut::new();
        encode(
            &Message::Piece {
                index: 0,
                begin: 0,
                data: Bytes::from(vec![1u8; 16384]),
            },
            &mut out,
        );
        let mut d = Decoder::new();
        let buf = Bytes::from(out.to_vec());
        let base = buf.as_ptr() as usize;
        d.set_buffer(buf);
        let Some(Message::Piece { data, .. }) = d.next_message().unwrap() else {
            panic!("expected piece");
        };
        // The payload points into the decoder's buffer, 13 bytes after the frame start.
        assert_eq!(data.as_ptr() as usize, base + 13);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn block() -> impl Strategy<Value = BlockRef> {
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(index, begin, length)| BlockRef {
                index,
                begin,
                length,
            })
        }

        fn message() -> impl Strategy<Value = Message> {
            prop_oneof![
                Just(Message::KeepAlive),
                Just(Message::Choke),
                Just(Message::HaveNone),
                any::<u32>().prop_map(Message::Have),
                any::<u32>().prop_map(Message::AllowedFast),
                any::<u16>().prop_map(Message::Port),
                block().prop_map(Message::Request),
                block().prop_map(Message::Reject),
                proptest::collection::vec(any::<u8>(), 0..300)
                    .prop_map(|v| Message::Bitfield(Bytes::from(v))),
                (
                    any::<u32>(),
                    any::<u32>(),
                    proptest::collection::vec(any::<u8>(), 0..20000)
                )
                    .prop_map(|(index, begin, d)| Message::Piece {
                        index,
                        begin,
                        data: Bytes::from(d)
                    }),
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
                    |(id, p)| Message::Extended {
                        id,
                        payload: Bytes::from(p)
                    }
                ),
            ]
        }

        proptest! {
            #[test]
            fn any_messages_round_trip_in_any_chunking(
                msgs in proptest::collection::vec(message(), 0..8),
                chunk in 1usize..5000,
            ) {
                let mut out = BytesMut::new();
                for m in &msgs {
                    encode(m, &mut out);
                }
                let mut d = Decoder::new();
                let mut got = Vec::new();
                for c in out.chunks(chunk) {
                    d.feed(c);
                    while let Some(m) = d.next_message().unwrap() {
                        got.push(m);
                    }
                }
                prop_assert_eq!(got, msgs);
                prop_assert_eq!(d.buffered(), 0);
            }

            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), n in 0u32..100) {
                let mut d = Decoder::new();
                d.feed(&data);
                while let Ok(Some(m)) = d.next_message() {
                    let _ = validate(&m, n);
                }
            }
        }
    }
}
