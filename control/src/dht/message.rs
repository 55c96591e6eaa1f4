//! The DHT's typed messages and their mapping onto the codec's frames.
//!
//! The state machine speaks [`Message`] rather than [`fovea_codec::Frame`]: it needs ids as
//! [`NodeId`] and contacts as [`Contact`], it only ever sees the seven frames below, and it
//! answers STORE with OK or ERROR, which the codec has as generic session frames. The mapping is
//! one to one (`From<Message> for Frame`, `TryFrom<Frame> for Message`), so a driver converts at
//! the edge and nothing is lost:
//!
//! | message | frame |
//! |---|---|
//! | `FindNode` | FIND_NODE (0x30) |
//! | `FindValue` | FIND_VALUE (0x31) |
//! | `Nodes` | NODES (0x32) |
//! | `Value` | VALUE (0x33) |
//! | `Store` | STORE (0x34) |
//! | `StoreOk` | OK (0x08) |
//! | `Error` | ERROR (0x09) |
//!
//! OK and ERROR carry only a request id, so a driver hands the DHT those whose request id it
//! sent on the DHT's behalf (the DHT ignores any it does not know).

use std::net::SocketAddr;

use bytes::Bytes;
use fovea_codec::frame::{self, ValueRecord};
use fovea_codec::{ErrorCode, Frame};

use super::id::NodeId;

/// A node as others reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// Its id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Contact {
    /// A contact.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Contact { id, addr }
    }
}

/// One record under a key, as a VALUE reply carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The node that stored it.
    pub publisher: NodeId,
    /// Whole seconds it has left (rounded up, so a live record never says 0).
    pub ttl_s: u64,
    /// The value.
    pub value: Bytes,
}

/// A DHT message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Asks for the closest contacts the receiver knows to `target`. Also the liveness probe
    /// (target = the prober's own id): the table has no PING of its own, and the NODES answer
    /// is as cheap as a PONG and sometimes useful.
    FindNode {
        /// Correlates the answer.
        request_id: u64,
        /// The id looked up.
        target: NodeId,
    },
    /// Asks for the records under `key`, or the closest contacts when there are none.
    FindValue {
        /// Correlates the answer.
        request_id: u64,
        /// The key looked up.
        key: NodeId,
    },
    /// Answer to FIND_NODE or FIND_VALUE: contacts close to the target.
    Nodes {
        /// The request's id.
        request_id: u64,
        /// At most k contacts.
        nodes: Vec<Contact>,
    },
    /// Answer to FIND_VALUE: the records under the key.
    Value {
        /// The request's id.
        request_id: u64,
        /// At most 20 records.
        records: Vec<Record>,
    },
    /// Asks the receiver to hold a record published by the sender.
    Store {
        /// Correlates the answer.
        request_id: u64,
        /// The key.
        key: NodeId,
        /// Seconds to keep it.
        ttl_s: u64,
        /// The value.
        value: Bytes,
    },
    /// STORE accepted (an OK frame).
    StoreOk {
        /// The STORE's request id.
        request_id: u64,
    },
    /// A request refused (an ERROR frame).
    Error {
        /// The request's id.
        request_id: u64,
        /// Why, as a protocol error code.
        code: u64,
    },
}

impl Message {
    /// The request id the message carries or answers.
    pub fn request_id(&self) -> u64 {
        match self {
            Message::FindNode { request_id, .. }
            | Message::FindValue { request_id, .. }
            | Message::Nodes { request_id, .. }
            | Message::Value { request_id, .. }
            | Message::Store { request_id, .. }
            | Message::StoreOk { request_id }
            | Message::Error { request_id, .. } => *request_id,
        }
    }

    /// An ERROR answer with `code`.
    pub fn error(request_id: u64, code: ErrorCode) -> Message {
        Message::Error { request_id, code: code as u64 }
    }
}

impl From<Message> for Frame {
    fn from(msg: Message) -> Frame {
        match msg {
            Message::FindNode { request_id, target } => {
                Frame::FindNode(frame::FindNode { request_id, target: target.0 })
            }
            Message::FindValue { request_id, key } => {
                Frame::FindValue(frame::FindValue { request_id, key: key.0 })
            }
            Message::Nodes { request_id, nodes } => Frame::Nodes(frame::Nodes {
                request_id,
                nodes: nodes.into_iter().map(|c| (c.id.0, c.addr)).collect(),
            }),
            Message::Value { request_id, records } => Frame::Value(frame::Value {
                request_id,
                records: records
                    .into_iter()
                    .map(|r| ValueRecord {
                        publisher: r.publisher.0,
                        ttl_s: r.ttl_s,
                        value: r.value,
                    })
                    .collect(),
            }),
            Message::Store { request_id, key, ttl_s, value } => {
                Frame::Store(frame::Store { request_id, key: key.0, ttl_s, value })
            }
            Message::StoreOk { request_id } => Frame::Ok(frame::Ok { request_id }),
            Message::Error { request_id, code } => {
                let message = ErrorCode::from_u64(code).map(ErrorCode::name).unwrap_or("");
                Frame::Error(frame::Error {
                    request_id,
                    code,
                    message: Bytes::from_static(message.as_bytes()),
                })
            }
        }
    }
}

/// A frame that is not one of the DHT's (returned as is, so the driver can route it elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame type {:#04x} is not a DHT message", .0.frame_type())]
pub struct NotDhtFrame(pub Frame);

impl TryFrom<Frame> for Message {
    type Error = NotDhtFrame;

    fn try_from(f: Frame) -> Result<Message, NotDhtFrame> {
        Ok(match f {
            Frame::FindNode(m) => {
                Message::FindNode { request_id: m.request_id, target: NodeId(m.target) }
            }
            Frame::FindValue(m) => {
                Message::FindValue { request_id: m.request_id, key: NodeId(m.key) }
            }
            Frame::Nodes(m) => Message::Nodes {
                request_id: m.request_id,
                nodes: m
                    .nodes
                    .into_iter()
                    .map(|(id, addr)| Contact::new(NodeId(id), addr))
                    .collect(),
            },
            Frame::Value(m) => Message::Value {
                request_id: m.request_id,
                records: m
                    .records
                    .into_iter()
                    .map(|r| Record {
                        publisher: NodeId(r.publisher),
                        ttl_s: r.ttl_s,
                        value: r.value,
                    })
                    .collect(),
            },
            Frame::Store(m) => Message::Store {
                request_id: m.request_id,
                key: NodeId(m.key),
                ttl_s: m.ttl_s,
                value: m.value,
            },
            Frame::Ok(m) => Message::StoreOk { request_id: m.request_id },
            Frame::Error(m) => Message::Error { request_id: m.request_id, code: m.code },
            other => return Err(NotDhtFrame(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use fovea_codec::{decode_frame, Limits};

    use super::*;

    fn round_trip(msg: Message) {
        let mut buf = BytesMut::new();
        Frame::from(msg.clone()).encode(&mut buf);
        let frame = decode_frame(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(Message::try_from(frame).unwrap(), msg);
    }

    #[test]
    fn every_message_survives_the_codec() {
        let id = NodeId([0x44; 32]);
        let addr: SocketAddr = "203.0.113.5:4433".parse().unwrap();
        round_trip(Message::FindNode { request_id: 15, target: id });
        round_trip(Message::FindValue { request_id: 16, key: id });
        round_trip(Message::Nodes { request_id: 15, nodes: vec![Contact::new(id, addr)] });
        round_trip(Message::Value {
            request_id: 16,
            records: vec![Record { publisher: id, ttl_s: 3600, value: Bytes::from_static(b"v") }],
        });
        round_trip(Message::Store {
            request_id: 17,
            key: id,
            ttl_s: 3600,
            value: Bytes::from_static(b"math.add@203.0.113.5:4433"),
        });
        round_trip(Message::StoreOk { request_id: 17 });
        round_trip(Message::error(17, ErrorCode::PayloadTooLarge));
    }

    #[test]
    fn other_frames_are_handed_back() {
        let f = Frame::Ok(frame::Ok { request_id: 1 });
        assert!(Message::try_from(f).is_ok());
        let ping = Frame::Ping(frame::Ping { ping_id: 1, sent_at_us: 2 });
        assert_eq!(Message::try_from(ping.clone()), Err(NotDhtFrame(ping)));
    }
}
