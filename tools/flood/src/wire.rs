//! The RPC frames on the tool's hot path, written and read by hand (docs/PROTOCOL.md §7.2).
//!
//! At hundreds of thousands of calls per second the generator must cost less per call than the
//! node, so a CALL or REPLY is encoded straight into the connection's pending bytes (no `Frame`,
//! no payload `Bytes`), and an INVOKE or REPLY from the node is read only as far as its id and
//! the payload's measurement header, in place, like DELIVER. The codec's full decoder handles
//! every other frame and says why a malformed one is malformed; the tests check both ways
//! against it.

use bytes::{BufMut, BytesMut};
use fovea_codec::frame::{types, FLAG_IDEMPOTENT};
use fovea_codec::{varint, Name};

use crate::payload::Stamp;

#[inline]
fn put_varint(out: &mut BytesMut, v: u64) {
    let mut buf = [0u8; 8];
    let n = varint::encode(v, &mut buf);
    out.put_slice(&buf[..n]);
}

#[inline]
fn bin_len(n: usize) -> usize {
    varint::len(n as u64) + n
}

/// Appends a CALL frame.
pub fn encode_call(
    out: &mut BytesMut,
    idempotent: bool,
    call_id: u64,
    timeout_ms: u64,
    procedure: &Name,
    payload: &[u8],
) {
    let name = procedure.as_bytes();
    let body = 1
        + varint::len(call_id)
        + varint::len(timeout_ms)
        + bin_len(name.len())
        + bin_len(payload.len());
    out.reserve(1 + 8 + body);
    out.put_u8(types::CALL);
    put_varint(out, body as u64);
    out.put_u8(if idempotent { FLAG_IDEMPOTENT } else { 0 });
    put_varint(out, call_id);
    put_varint(out, timeout_ms);
    put_varint(out, name.len() as u64);
    out.put_slice(name);
    put_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

/// Appends a REPLY frame.
pub fn encode_reply(out: &mut BytesMut, id: u64, payload: &[u8]) {
    let body = varint::len(id) + bin_len(payload.len());
    out.reserve(1 + 8 + body);
    out.put_u8(types::REPLY);
    put_varint(out, body as u64);
    put_varint(out, id);
    put_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

/// What the fast path reads of an INVOKE or REPLY body: the id (invocation id or call id) and
/// the payload's measurement header (`None` when the payload is too short to carry one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Invocation id (INVOKE) or call id (REPLY).
    pub id: u64,
    /// The payload's header.
    pub stamp: Option<Stamp>,
}

struct Cursor<'a> {
    body: &'a [u8],
    off: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Option<u64> {
        let (v, n) = varint::decode(self.body.get(self.off..)?)?;
        self.off += n;
        Some(v)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.off = self.off.checked_add(n).filter(|&o| o <= self.body.len())?;
        Some(())
    }

    /// A length-prefixed payload that must end the body exactly.
    fn last_bin(&mut self) -> Option<&[u8]> {
        let n = self.varint()? as usize;
        let start = self.off;
        (start.checked_add(n)? == self.body.len()).then(|| &self.body[start..])
    }
}

/// Reads an INVOKE body (invocation id, timeout, caller, procedure, payload). `None`: malformed
/// (the full decoder then says why).
pub fn invoke_answer(body: &[u8]) -> Option<Answer> {
    let mut c = Cursor { body, off: 0 };
    let id = c.varint()?;
    c.varint()?; // time left
    c.skip(32)?; // caller
    let name = c.varint()? as usize;
    c.skip(name)?;
    let payload = c.last_bin()?;
    Some(Answer { id, stamp: Stamp::read(payload) })
}

/// Reads a REPLY body (id, payload). `None`: malformed.
pub fn reply_answer(body: &[u8]) -> Option<Answer> {
    let mut c = Cursor { body, off: 0 };
    let id = c.varint()?;
    let payload = c.last_bin()?;
    Some(Answer { id, stamp: Stamp::read(payload) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fovea_codec::frame::{self, Frame};
    use fovea_codec::{decode_frame, peek_header, Limits};

    fn stamped(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        Stamp { publisher: 4, seq: 1 << 33, intended_ns: 987_654_321 }.write(&mut p);
        p
    }

    #[test]
    fn call_and_reply_decode_with_the_codec() {
        let name: Name = "bench.echo".parse().unwrap();
        let payload = stamped(64);
        let mut buf = BytesMut::new();
        encode_call(&mut buf, true, 70_000, 250, &name, &payload);
        encode_reply(&mut buf, 1 << 40, &payload);
        let limits = Limits::default();
        let call = decode_frame(&mut buf, &limits).unwrap().unwrap();
        let want = Frame::Call(frame::Call {
            idempotent: true,
            call_id: 70_000,
            timeout_ms: 250,
            procedure: name,
            payload: Bytes::from(payload.clone()),
        });
        assert_eq!(call, want);
        let reply = decode_frame(&mut buf, &limits).unwrap().unwrap();
        assert_eq!(reply, Frame::Reply(frame::Reply { id: 1 << 40, payload: payload.into() }));
        assert!(buf.is_empty());
    }

    #[test]
    fn fast_reads_agree_with_the_codec() {
        let payload = Bytes::from(stamped(40));
        let stamp = Stamp::read(&payload);
        let invoke = Frame::Invoke(frame::Invoke {
            invocation_id: 77,
            timeout_ms: 1990,
            caller: [0x11; 32],
            procedure: "math.add".parse().unwrap(),
            payload: payload.clone(),
        });
        let body_of = |f: &Frame| {
            let b = f.to_bytes();
            let h = peek_header(&b, &Limits::default()).unwrap().unwrap();
            b[h.header_len..].to_vec()
        };
        let body = body_of(&invoke);
        assert_eq!(invoke_answer(&body), Some(Answer { id: 77, stamp }));
        assert_eq!(invoke_answer(&body[..body.len() - 1]), None, "truncated");
        let reply = Frame::Reply(frame::Reply { id: 5, payload: Bytes::from_static(b"short") });
        let body = body_of(&reply);
        assert_eq!(reply_answer(&body), Some(Answer { id: 5, stamp: None }));
        let mut long = body.clone();
        long.push(0);
        assert_eq!(reply_answer(&long), None, "trailing bytes");
    }
}
