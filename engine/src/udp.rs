//! Batched UDP I/O on a shard's non-blocking socket: `recvmmsg` to drain what the kernel holds
//! and `sendmmsg` with UDP GSO to submit a loop turn's packets in as few syscalls as possible.
//!
//! Hand-written over libc because this is the per-packet path: the kernel's UDP send costs
//! ~3.5-4 µs per datagram here, GSO ~0.2 µs per segment (docs/BENCHMARKS.md), and no kept crate
//! exposes sendmmsg+GSO for a monoio-owned socket. The monoio driver only waits for readiness;
//! the syscalls themselves are made here, synchronously, as quinn-udp does.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// Receive slot size: larger than any UDP payload quiche will accept from a peer.
pub const RECV_SLOT: usize = 2048;
/// Largest GSO super-datagram (the kernel's limit is 64 segments / 64 KiB).
const GSO_BYTES_MAX: usize = 60_000;
const GSO_SEGMENTS_MAX: usize = 64;

fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Kernel offloads a shard's socket uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offload {
    /// UDP GSO on send (`UDP_SEGMENT` trains).
    pub gso: bool,
    /// UDP GRO on receive (coalesced buffers; receive slots sized for them).
    pub gro: bool,
}

/// Receive slot with UDP GRO: a coalesced train is at most one 64 KiB IP datagram.
const GRO_SLOT: usize = 1 << 16;
/// `UDP_GRO` from linux/udp.h (not in the libc crate for glibc targets).
const UDP_GRO: libc::c_int = 104;
/// Control-message room per slot: one UDP_GRO cmsg (16-byte header + int, padded).
const CMSG_ROOM: usize = 32;

/// Lets the kernel hand over several datagrams of one sender as one buffer with their segment
/// size (UDP GRO, Linux 5.0+): one queued skb, one `recvmmsg` slot and one copy for a burst
/// instead of one each per datagram. On loopback a GSO train arrives whole instead of being
/// split on receive. Returns false (and changes nothing) where the kernel refuses.
pub fn enable_gro(socket: &impl std::os::fd::AsRawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Reusable buffers for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; CMSG_ROOM / 8]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    received: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new(false)
    }
}

impl RecvBatch {
    /// Allocates `BATCH` receive slots, large enough for GRO trains when `gro` is on (4 MiB
    /// of address space per shard; the kernel only touches what it fills).
    pub fn new(gro: bool) -> RecvBatch {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let slot = if gro { GRO_SLOT } else { RECV_SLOT };
        RecvBatch {
            bufs: vec![0u8; slot * BATCH],
            slot,
            addrs: vec![zero_addr; BATCH],
            cmsgs: vec![[0u64; CMSG_ROOM / 8]; BATCH],
            iovs: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
            received: 0,
        }
    }

    /// Receives up to `BATCH` buffers without blocking; `Ok(0)` when none are waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.iovs.clear();
        self.msgs.clear();
        for (i, (addr, cmsg)) in self.addrs.iter_mut().zip(self.cmsgs.iter_mut()).enumerate() {
            let buf = &mut self.bufs[i * self.slot..(i + 1) * self.slot];
            self.iovs.push(libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: self.slot });
            // SAFETY: zeroed mmsghdr is valid; pointers are filled in below.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CMSG_ROOM as _;
            self.msgs.push(m);
        }
        for (m, iov) in self.msgs.iter_mut().zip(self.iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points at live buffers owned by self for the call's duration.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.received = 0;
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The `i`-th received buffer, its source, and its segment size: a GRO buffer holds
    /// several datagrams of that size back to back (the last may be shorter); without GRO the
    /// segment size is the buffer's length. `None` for a truncated or odd one.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr, usize)> {
        debug_assert!(i < self.received);
        let m = &self.msgs[i];
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = m.msg_len as usize;
        let from = from_sockaddr(&self.addrs[i])?;
        // Without a UDP_GRO message the buffer is one datagram; `chunks_mut` of a segment
        // longer than the buffer yields it whole.
        let mut segment = len.max(1);
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG macros walk within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    if size > 0 {
                        segment = size as usize;
                    }
                }
                c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
            }
        }
        let start = i * self.slot;
        Some((&mut self.bufs[start..start + len], from, segment))
    }
}

/// One outgoing message: a single datagram or a GSO train of equal-size segments to one peer.
struct OutMsg {
    to: SocketAddr,
    start: usize,
    len: usize,
    segment: usize,
    segments: usize,
}

/// Collects a loop turn's packets and submits them with `sendmmsg`, merging consecutive
/// packets to the same peer into one GSO message when the socket supports it.
pub struct SendBatch {
    buf: Vec<u8>,
    msgs: Vec<OutMsg>,
    gso: bool,
    /// Packets queued since the last `flush` (for metrics).
    pub packets: usize,
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    /// Syscalls made.
    pub calls: u64,
    /// Packets handed to the kernel.
    pub packets: u64,
    /// Bytes handed to the kernel.
    pub bytes: u64,
    /// True when the kernel's buffer was full and packets remain queued.
    pub blocked: bool,
}

impl SendBatch {
    /// A batch; `gso` enables UDP_SEGMENT merging.
    pub fn new(gso: bool) -> SendBatch {
        SendBatch {
            buf: Vec::with_capacity(BATCH * 1500),
            msgs: Vec::with_capacity(BATCH),
            gso,
            packets: 0,
        }
    }

    /// True when nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// True when the next packet should wait for a flush (the batch is full).
    pub fn is_full(&self) -> bool {
        self.msgs.len() >= BATCH
    }

    /// Space for the next packet: write it into the returned slice, then call `commit`.
    pub fn reserve(&mut self, max: usize) -> &mut [u8] {
        let start = self.buf.len();
        self.buf.resize(start + max, 0);
        &mut self.buf[start..]
    }

    /// Gives back the last `reserve` unused.
    pub fn cancel(&mut self, reserved: usize) {
        let start = self.buf.len() - reserved;
        self.buf.truncate(start);
    }

    /// Commits `len` bytes written into the last `reserve` as a packet to `to`.
    pub fn commit(&mut self, reserved: usize, len: usize, to: SocketAddr) {
        debug_assert!(len > 0, "empty datagrams are never sent");
        let start = self.buf.len() - reserved;
        self.buf.truncate(start + len);
        self.packets += 1;
        if self.gso {
            if let Some(last) = self.msgs.last_mut() {
                let contiguous = last.start + last.len == start;
                // A GSO train is equal-size segments, the last of which may be shorter; once a
                // short one is in, the train is closed.
                let train_open = last.len == last.segment * last.segments;
                if last.to == to
                    && contiguous
                    && train_open
                    && len <= last.segment
                    && last.segments < GSO_SEGMENTS_MAX
                    && last.len + len <= GSO_BYTES_MAX
                {
                    last.len += len;
                    last.segments += 1;
                    return;
                }
            }
        }
        self.msgs.push(OutMsg { to, start, len, segment: len, segments: 1 });
    }

    /// Takes every queued packet out (GSO trains split into their segments) instead of sending:
    /// how sans-I/O tests carry the shard's output to their in-memory peers.
    pub fn take_packets(&mut self) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::with_capacity(self.packets);
        for m in self.msgs.drain(..) {
            let mut start = m.start;
            let end = m.start + m.len;
            while start < end {
                let stop = (start + m.segment).min(end);
                out.push((self.buf[start..stop].to_vec(), m.to));
                start = stop;
            }
        }
        self.buf.clear();
        self.packets = 0;
        out
    }

    /// Sends everything queued; on `EAGAIN` keeps the rest queued and reports `blocked`.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<FlushStats> {
        let mut stats = FlushStats::default();
        let mut done = 0;
        while done < self.msgs.len() {
            let chunk = &self.msgs[done..(done + BATCH).min(self.msgs.len())];
            // SAFETY: zeroed C structs are valid; every pointer set below points into `self.buf`
            // or the local arrays, which outlive the syscall.
            let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            const CMSG_SPACE: usize = 32;
            let mut cmsgs = [[0u8; CMSG_SPACE]; BATCH];
            for (i, m) in chunk.iter().enumerate() {
                let alen = to_sockaddr(&m.to, &mut addrs[i]);
                iovs[i] = libc::iovec {
                    iov_base: self.buf[m.start..].as_mut_ptr().cast(),
                    iov_len: m.len,
                };
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = alen;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                if m.segments > 1 {
                    h.msg_control = cmsgs[i].as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE of a u16 fits the 32-byte control buffer.
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
            // SAFETY: `hdrs[..chunk.len()]` are fully initialised and point at live memory.
            let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), chunk.len() as u32, 0) };
            stats.calls += 1;
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    stats.blocked = true;
                    break;
                }
                // A datagram the kernel refuses outright (unreachable peer, EINVAL for a GSO
                // the device cannot do) is dropped like a lost packet; QUIC recovers.
                let m = &chunk[0];
                if e.raw_os_error() == Some(libc::EIO) || e.raw_os_error() == Some(libc::EINVAL) {
                    self.gso = self.gso && m.segments == 1;
                }
                done += 1;
                continue;
            }
            for m in &chunk[..n as usize] {
                stats.packets += m.segments as u64;
                stats.bytes += m.len as u64;
            }
            done += n as usize;
        }
        if done == self.msgs.len() {
            self.msgs.clear();
            self.buf.clear();
            self.packets = 0;
        } else {
            // Keep the unsent tail; buffer offsets stay valid because `buf` is not compacted.
            self.msgs.drain(..done);
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn gso_trains_arrive_as_separate_datagrams_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let gso = crate::steer::gso_supported(&tx);
        let mut batch = SendBatch::new(gso);
        let to = rx.local_addr().unwrap();
        let sizes = [100usize, 100, 100, 40, 100, 7];
        for (i, &len) in sizes.iter().enumerate() {
            let slot = batch.reserve(1500);
            slot[..len].fill(i as u8);
            batch.commit(1500, len, to);
        }
        if gso {
            // 100,100,100,40 form one train (closed by the short one); 100,7 another.
            assert_eq!(batch.msgs.len(), 2);
        }
        let stats = batch.flush(tx.as_raw_fd()).unwrap();
        assert_eq!(stats.packets, sizes.len() as u64);
        assert!(batch.is_empty());
        let mut buf = [0u8; 2048];
        for (i, &len) in sizes.iter().enumerate() {
            let n = rx.recv(&mut buf).expect("datagram");
            assert_eq!(n, len, "segment {i}");
            assert!(buf[..n].iter().all(|&b| b == i as u8));
        }
    }

    #[test]
    fn gro_receives_a_gso_train_as_one_buffer_that_splits_back_into_its_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let gro = enable_gro(&rx);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let gso = crate::steer::gso_supported(&tx);
        let mut send = SendBatch::new(gso);
        let to = rx.local_addr().unwrap();
        let sizes = [100usize, 100, 100, 40];
        for (i, &len) in sizes.iter().enumerate() {
            let slot = send.reserve(1500);
            slot[..len].fill(i as u8);
            send.commit(1500, len, to);
        }
        assert_eq!(send.flush(tx.as_raw_fd()).unwrap().packets, sizes.len() as u64);
        let mut batch = RecvBatch::new(gro);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut buffers = 0;
        // Loopback delivery is synchronous with send; a bounded number of polls.
        for _ in 0..1000 {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let (data, from, segment) = batch.get(i).expect("buffer");
                assert_eq!(from, tx.local_addr().unwrap());
                buffers += 1;
                got.extend(data.chunks(segment).map(<[u8]>::to_vec));
            }
            if got.len() >= sizes.len() {
                break;
            }
        }
        assert_eq!(got.len(), sizes.len());
        for (i, (d, &len)) in got.iter().zip(sizes.iter()).enumerate() {
            assert_eq!(d.len(), len, "datagram {i}");
            assert!(d.iter().all(|&b| b == i as u8), "datagram {i}");
        }
        if gso && gro {
            // The kernel kept the train whole: one slot, one copy.
            assert_eq!(buffers, 1);
        } else {
            assert_eq!(buffers, sizes.len());
        }
    }

    #[test]
    fn recv_batch_drains_waiting_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::new(false);
        let mut seen = 0;
        // Loopback delivery is synchronous with send, but allow a bounded number of polls.
        for _ in 0..1000 {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let (data, from, segment) = batch.get(i).expect("datagram");
                assert_eq!(segment, data.len());
                assert_eq!(data, &[seen as u8; 10]);
                assert_eq!(from, tx.local_addr().unwrap());
                seen += 1;
            }
            if seen == 5 {
                break;
            }
        }
        assert_eq!(seen, 5);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 0);
    }
}
