//! One UDP socket per worker thread, connected to the node, with batched I/O.
//!
//! Connected because every datagram goes to the one node address: the kernel then checks that
//! nothing is sent elsewhere, skips the per-send route lookup, filters what we receive to the
//! node's address, and reports an ICMP port-unreachable as `ECONNREFUSED`, which is how a run
//! against a port where nothing listens fails at once with a clear message instead of timing out.
//!
//! Sends: a loop turn's packets (from every connection of the thread) are queued and handed to
//! the kernel with `sendmmsg`; consecutive packets of equal size are merged into one UDP GSO
//! message (all go to the same address, so packets of different connections merge too).
//! Receives: `recvmmsg` drains up to `BATCH` datagrams per call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams per `recvmmsg` / messages per `sendmmsg`.
pub const BATCH: usize = 64;
/// Receive slot: room for a whole GRO train (up to 64 KiB of coalesced datagrams).
const RECV_SLOT: usize = 1 << 16;
/// `UDP_GRO` from linux/udp.h (not in the libc crate for glibc targets).
const UDP_GRO: libc::c_int = 104;
/// Largest packet quiche produces (max_send_udp_payload_size).
pub const PACKET_MAX: usize = 1350;
const GSO_SEGMENTS_MAX: usize = 64;
const GSO_BYTES_MAX: usize = 60_000;
/// Requested socket buffers; the kernel caps them at net.core.{r,w}mem_max unless we may force.
const SOCKET_BUFFER_BYTES: usize = 16 << 20;

/// Creates a non-blocking UDP socket connected to `node`.
pub fn connect(node: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = bound(node)?;
    socket.connect(&node.into())?;
    Ok(socket.into())
}

/// A non-blocking UDP socket of `node`'s family with our options, bound to an ephemeral port.
fn bound(node: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(node), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    set_buffers(&socket);
    enable_rx_timestamps(&socket);
    enable_gro(&socket);
    let local: SocketAddr = if node.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&local.into())?;
    Ok(socket)
}

/// Large buffers: a subscriber thread receives bursts of thousands of packets (one per
/// subscriber per publish) and must not drop them before it gets to read.
fn set_buffers(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    for (force, plain) in
        [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
    {
        let v = SOCKET_BUFFER_BYTES as libc::c_int;
        // SAFETY: setsockopt reads an int from a valid pointer of the given length.
        let forced = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            // Without CAP_NET_ADMIN: best effort, capped by the sysctl.
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// Asks the kernel to stamp each received datagram with its arrival time (CLOCK_REALTIME, ns):
/// latency then ends when a message reached this host, not when a busy worker got to it.
fn enable_rx_timestamps(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Lets the kernel hand us a GSO train from the node as one buffer (with its segment size)
/// instead of splitting it into one queued datagram per segment: one slot and far less kernel
/// work per packet when the node batches. Best effort: without it we get the segments.
fn enable_gro(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// CLOCK_REALTIME now, in ns (the clock of the kernel's receive timestamps).
pub fn realtime_ns() -> u64 {
    // SAFETY: clock_gettime writes into the zeroed timespec we pass.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: a valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether the kernel accepts UDP_SEGMENT on this socket.
pub fn gso_supported(fd: RawFd) -> bool {
    let v: libc::c_int = 0;
    // SAFETY: reading the option into a valid int.
    let mut out: libc::c_int = v;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut out as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
    }
}

/// Datagrams dropped by the kernel for this socket because its receive buffer was full
/// (`/proc/net/udp{,6}`, last column), or `None` when the socket is not found there.
pub fn kernel_drops(local: SocketAddr) -> Option<u64> {
    let file = if local.is_ipv4() { "/proc/net/udp" } else { "/proc/net/udp6" };
    let text = std::fs::read_to_string(file).ok()?;
    let port = format!(":{:04X}", local.port());
    text.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let local_field = f.nth(1)?;
        if !local_field.ends_with(&port) {
            return None;
        }
        l.split_whitespace().last()?.parse().ok()
    })
}

/// Control-message room per datagram: SCM_TIMESTAMPNS (16-byte header + 16-byte timespec) and
/// UDP_GRO (16-byte header + int, padded).
const CMSG_ROOM: usize = 96;

/// Reusable buffers for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_SLOT]>,
    cmsgs: Vec<[u64; CMSG_ROOM / 8]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    received: usize,
    /// Buffers of the last `recv` already handed out by `next_index`.
    taken: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    /// `BATCH` receive slots.
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0u8; RECV_SLOT]; BATCH],
            cmsgs: vec![[0u64; CMSG_ROOM / 8]; BATCH],
            iovs: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
            received: 0,
            taken: 0,
        }
    }

    /// The index of the next buffer of the last `recv` not handed out yet: a caller may stop
    /// part-way through a batch and continue later.
    #[inline]
    pub fn next_index(&mut self) -> Option<usize> {
        (self.taken < self.received).then(|| {
            self.taken += 1;
            self.taken - 1
        })
    }

    /// True when buffers of the last `recv` remain to be handed out.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.taken < self.received
    }

    /// Receives up to `BATCH` datagrams without blocking; `Ok(0)` when none wait.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.iovs.clear();
        self.msgs.clear();
        for buf in &mut self.bufs {
            self.iovs.push(libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: RECV_SLOT });
        }
        for (iov, cmsg) in self.iovs.iter_mut().zip(self.cmsgs.iter_mut()) {
            // SAFETY: an all-zero mmsghdr is valid (no name); pointers are set below.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CMSG_ROOM as _;
            self.msgs.push(m);
        }
        // SAFETY: every header points at a live slot owned by `self` for the call's duration.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.taken = 0;
        if n < 0 {
            self.received = 0;
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The `i`-th buffer of the last `recv`: the bytes, the kernel arrival time (CLOCK_REALTIME
    /// ns, when the kernel gave one), and the segment size when the buffer holds a GRO train of
    /// datagrams; `None` when it was truncated.
    #[inline]
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], Option<u64>, Option<usize>)> {
        debug_assert!(i < self.received);
        let m = &self.msgs[i];
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let mut stamp = None;
        let mut segment = None;
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG macros walk within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
            while !c.is_null() {
                let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
                if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                } else if level == libc::SOL_UDP && kind == UDP_GRO {
                    let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    segment = usize::try_from(size).ok().filter(|&s| s > 0);
                }
                c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
            }
        }
        Some((&mut self.bufs[i][..m.msg_len as usize], stamp, segment))
    }
}

/// A queued message: one datagram, or a GSO train of `segments` equal-size datagrams (the last
/// may be shorter).
#[derive(Debug, Clone, Copy)]
struct OutMsg {
    start: usize,
    len: usize,
    segment: usize,
    segments: usize,
}

/// What `SendBatch::flush` achieved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub packets: u64,
    /// True when the kernel refused more for now (EAGAIN); the rest stays queued.
    pub blocked: bool,
}

/// A loop turn's outgoing packets.
pub struct SendBatch {
    /// Packet bytes; allocated (and zeroed) once, written in place.
    buf: Vec<u8>,
    used: usize,
    msgs: Vec<OutMsg>,
    gso: bool,
    sent_from: usize,
}

/// Packets a batch holds before it must be flushed (GSO trains hold several per message).
const BATCH_PACKETS_MAX: usize = 1024;

impl SendBatch {
    /// An empty batch; `gso` merges equal-size packets into UDP_SEGMENT messages.
    pub fn new(gso: bool) -> SendBatch {
        SendBatch {
            buf: vec![0u8; BATCH_PACKETS_MAX * PACKET_MAX],
            used: 0,
            msgs: Vec::with_capacity(BATCH),
            gso,
            sent_from: 0,
        }
    }

    /// True when the next packet must wait for a flush.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.msgs.len() >= BATCH || self.used + PACKET_MAX > self.buf.len()
    }

    /// True when nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.sent_from == self.msgs.len()
    }

    /// Room for one packet of up to `PACKET_MAX` bytes (only when not `is_full`); fill it,
    /// then `commit` its length.
    #[inline]
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..self.used + PACKET_MAX]
    }

    /// Keeps `len` bytes of the last `slot` as a packet (0: nothing).
    #[inline]
    pub fn commit(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        let start = self.used;
        self.used += len;
        if self.gso {
            if let Some(last) = self.msgs.last_mut() {
                // A train is open while every segment so far has the full segment size.
                let open = last.len == last.segment * last.segments;
                if open
                    && len <= last.segment
                    && last.segments < GSO_SEGMENTS_MAX
                    && last.len + len <= GSO_BYTES_MAX
                    && last.start + last.len == start
                {
                    last.len += len;
                    last.segments += 1;
                    return;
                }
            }
        }
        self.msgs.push(OutMsg { start, len, segment: len, segments: 1 });
    }

    /// Hands everything queued to the kernel. On EAGAIN the rest stays queued (`blocked`).
    pub fn flush(&mut self, fd: RawFd) -> io::Result<Flushed> {
        let mut out = Flushed::default();
        while self.sent_from < self.msgs.len() {
            let chunk = &self.msgs[self.sent_from..self.msgs.len().min(self.sent_from + BATCH)];
            // SAFETY: zeroed C structs are valid; the pointers set below point into `self.buf`
            // and these local arrays, which outlive the call.
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let mut cmsgs = [[0u64; 4]; BATCH];
            for (i, m) in chunk.iter().enumerate() {
                iovs[i] = libc::iovec {
                    iov_base: self.buf[m.start..].as_mut_ptr().cast(),
                    iov_len: m.len,
                };
                let h = &mut hdrs[i].msg_hdr;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                if m.segments > 1 {
                    h.msg_control = cmsgs[i].as_mut_ptr().cast();
                    // SAFETY: the 32-byte, 8-aligned control buffer holds one u16 cmsg.
                    unsafe {
                        h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
                        let c = libc::CMSG_FIRSTHDR(h);
                        (*c).cmsg_level = libc::SOL_UDP;
                        (*c).cmsg_type = libc::UDP_SEGMENT;
                        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                        std::ptr::write_unaligned(
                            libc::CMSG_DATA(c).cast::<u16>(),
                            m.segment as u16,
                        );
                    }
                }
            }
            // SAFETY: `hdrs[..chunk.len()]` are initialised and point at live memory.
            let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), chunk.len() as u32, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    out.blocked = true;
                    return Ok(out);
                }
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    self.clear();
                    return Err(e);
                }
                // Anything else (EIO/EINVAL for a GSO the device cannot do, ENOBUFS): drop the
                // first message like a lost packet, stop merging if it was a train; QUIC
                // retransmits.
                if chunk[0].segments > 1 {
                    self.gso = false;
                }
                self.sent_from += 1;
                continue;
            }
            for m in &chunk[..n as usize] {
                out.packets += m.segments as u64;
            }
            self.sent_from += n as usize;
        }
        self.clear();
        Ok(out)
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.used = 0;
        self.sent_from = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_arrive_in_order_as_separate_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let tx = connect(rx.local_addr().unwrap()).unwrap();
        let mut b = SendBatch::new(gso_supported(tx.as_raw_fd()));
        let sizes = [100usize, 100, 100, 40, 100, 7, 1350];
        for (i, &len) in sizes.iter().enumerate() {
            b.slot()[..len].fill(i as u8);
            b.commit(len);
        }
        let f = b.flush(tx.as_raw_fd()).unwrap();
        assert_eq!(f.packets, sizes.len() as u64);
        assert!(b.is_empty());
        let mut buf = [0u8; 2048];
        for (i, &len) in sizes.iter().enumerate() {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(n, len, "datagram {i}");
            assert!(buf[..n].iter().all(|&x| x == i as u8));
        }
    }

    #[test]
    fn gro_trains_split_back_into_the_sent_datagrams() {
        // Two flood sockets facing each other: one sends a GSO train, the other (GRO on)
        // receives it as one buffer with its segment size, or as separate datagrams.
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (a, b) = (bound(loopback).unwrap(), bound(loopback).unwrap());
        let port = |s: &Socket| s.local_addr().unwrap().as_socket().unwrap().port();
        a.connect(&SocketAddr::from(([127, 0, 0, 1], port(&b))).into()).unwrap();
        b.connect(&SocketAddr::from(([127, 0, 0, 1], port(&a))).into()).unwrap();
        let mut batch = SendBatch::new(gso_supported(b.as_raw_fd()));
        let sizes = [500usize, 500, 500, 120];
        for (i, &len) in sizes.iter().enumerate() {
            batch.slot()[..len].fill(i as u8 + 1);
            batch.commit(len);
        }
        batch.flush(b.as_raw_fd()).unwrap();
        let mut r = RecvBatch::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        for _ in 0..1000 {
            let n = r.recv(a.as_raw_fd()).unwrap();
            for i in 0..n {
                let (data, _, segment) = r.get(i).unwrap();
                let seg = segment.unwrap_or(data.len());
                got.extend(data.chunks(seg).map(<[u8]>::to_vec));
            }
            if got.len() >= sizes.len() {
                break;
            }
        }
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, sizes);
        for (i, d) in got.iter().enumerate() {
            assert!(d.iter().all(|&x| x == i as u8 + 1));
        }
    }

    #[test]
    fn received_datagrams_carry_a_kernel_timestamp() {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = connect(peer.local_addr().unwrap()).unwrap();
        let before = realtime_ns();
        peer.send_to(b"hello", a.local_addr().unwrap()).unwrap();
        let mut r = RecvBatch::new();
        let mut got = 0;
        for _ in 0..1000 {
            got = r.recv(a.as_raw_fd()).unwrap();
            if got > 0 {
                break;
            }
        }
        assert_eq!(got, 1);
        let (data, stamp, _) = r.get(0).unwrap();
        assert_eq!(data, b"hello");
        let stamp = stamp.expect("kernel timestamp");
        // Stamped on arrival: after the send started, before now.
        assert!(before <= stamp && stamp <= realtime_ns(), "{before} {stamp}");
    }

    #[test]
    fn refused_port_is_reported() {
        // Bind and drop a socket to get a port where (very likely) nothing listens.
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let tx = connect(port).unwrap();
        let mut b = SendBatch::new(false);
        b.slot()[..10].fill(1);
        b.commit(10);
        let _ = b.flush(tx.as_raw_fd());
        // The ICMP error arrives synchronously on loopback; the next call reports it.
        let mut r = RecvBatch::new();
        let e = r.recv(tx.as_raw_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    }
}
