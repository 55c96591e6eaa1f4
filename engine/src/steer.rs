//! The shard sockets: one `SO_REUSEPORT` UDP socket per shard, bound in shard order, and a
//! classic-BPF program that steers each datagram to the shard named in its connection ID.
//!
//! Why classic BPF: `SO_ATTACH_REUSEPORT_CBPF` needs no eBPF loader, no extra privileges and no
//! dependency, and the decision is two byte loads and a modulo (docs/decisions/0002-node-shape.md).
//! The program runs with the packet's UDP payload at offset 0:
//! - long header (bit 0x80 of byte 0 set): byte 6 is the first DCID byte (flags 1 + version 4 +
//!   DCID length 1); for a client's first Initial that byte is random (spreads handshakes), for
//!   its Handshake packets it is the shard byte of the node's CID;
//! - short header: byte 1 is the first DCID byte, the shard byte of the node's CID.
//!
//! The program returns `byte % shards`, the index of the socket in the reuseport group, which is
//! the bind order. A datagram that still lands on a shard that does not own its connection (a
//! connection that moved after HELLO, a client CID) is handed over by the shard (`shard/`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Creates the sockets of every shard, bound to `addr` with `SO_REUSEPORT`, and attaches the
/// steering program. The port of the first bind is reused by the others when `addr` has port 0.
pub fn bind_shard_sockets(
    addr: SocketAddr,
    shards: usize,
    recv_buffer: usize,
    send_buffer: usize,
) -> io::Result<Vec<std::net::UdpSocket>> {
    assert!((1..=crate::cid::SHARDS_MAX).contains(&shards));
    let mut sockets = Vec::with_capacity(shards);
    let mut bind_addr = addr;
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(bind_addr), Type::DGRAM, Some(Protocol::UDP))?;
        if bind_addr.is_ipv6() {
            // `[::]` serves IPv4 too unless the operator binds a specific address.
            let _ = socket.set_only_v6(false);
        }
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // With CAP_NET_ADMIN the FORCE variants go past net.core.{r,w}mem_max; otherwise the
        // kernel caps the plain request there (docs/OPERATIONS.md). A full receive buffer drops
        // datagrams, so the size matters for fan-out to many peers.
        if !force_buffer(&socket, libc::SO_RCVBUFFORCE, recv_buffer) {
            let _ = socket.set_recv_buffer_size(recv_buffer);
        }
        if !force_buffer(&socket, libc::SO_SNDBUFFORCE, send_buffer) {
            let _ = socket.set_send_buffer_size(send_buffer);
        }
        socket.bind(&bind_addr.into())?;
        if bind_addr.port() == 0 {
            bind_addr = socket.local_addr()?.as_socket().expect("inet socket");
        }
        sockets.push(socket);
    }
    if shards > 1 {
        attach_steering(&sockets[0], shards as u32)?;
    }
    Ok(sockets.into_iter().map(Into::into).collect())
}

fn force_buffer(socket: &Socket, option: libc::c_int, bytes: usize) -> bool {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with a valid int value; failure (no CAP_NET_ADMIN) is reported.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The classic-BPF steering program for `shards` sockets.
pub fn steering_program(shards: u32) -> [libc::sock_filter; 7] {
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
    const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        ins(LD_B_ABS, 0, 0, 0),   // A = first byte
        ins(JSET_K, 0, 2, 0x80),  // long header?
        ins(LD_B_ABS, 0, 0, 6),   //   A = first DCID byte of a long header
        ins(JA, 0, 0, 1),         //   skip the short-header load
        ins(LD_B_ABS, 0, 0, 1),   // A = first DCID byte of a short header
        ins(MOD_K, 0, 0, shards), // A %= shards
        ins(RET_A, 0, 0, 0),      // socket index in the reuseport group
    ]
}

fn attach_steering(socket: &Socket, shards: u32) -> io::Result<()> {
    let mut program = steering_program(shards);
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: `fprog` points at a live, correctly sized filter array for the duration of the
    // call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel accepts UDP GSO (`UDP_SEGMENT`) on this socket.
pub fn gso_supported(socket: &std::net::UdpSocket) -> bool {
    let segment: libc::c_int = 1200;
    // SAFETY: plain setsockopt with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&segment as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return false;
    }
    // Reset to "no segmentation" so plain sends stay plain; per-send cmsgs choose the size.
    let zero: libc::c_int = 0;
    // SAFETY: as above.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends a datagram whose "DCID byte" names a shard and checks which socket receives it:
    /// the kernel runs the real program, so this tests the steering end to end on loopback.
    #[test]
    fn datagrams_land_on_the_socket_their_cid_byte_names() {
        let shards = 3;
        let sockets = bind_shard_sockets("127.0.0.1:0".parse().unwrap(), shards, 1 << 20, 1 << 20)
            .expect("bind");
        let addr = sockets[0].local_addr().unwrap();
        for s in &sockets {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        }
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for (target, socket) in sockets.iter().enumerate() {
            // Short header: 0x40, then the DCID whose first byte is the shard.
            let short = [0x40, target as u8, 0xaa, 0xbb, 0xcc];
            client.send_to(&short, addr).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = socket.recv_from(&mut buf).expect("short header steered");
            assert_eq!(&buf[..n], &short);
            // Long header: flags, 4-byte version, DCID length, DCID.
            let long = [0xc0, 0, 0, 0, 1, 16, (target + shards) as u8, 0x11];
            client.send_to(&long, addr).unwrap();
            let (n, _) = socket.recv_from(&mut buf).expect("long header steered");
            assert_eq!(&buf[..n], &long);
        }
    }
}
