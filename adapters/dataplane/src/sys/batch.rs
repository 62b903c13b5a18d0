//! Batched datagram I/O for the UDP data plane: on Linux one `recvmmsg(2)` receives up to
//! [`BATCH`] datagrams and one `sendmmsg(2)` sends a run of them; elsewhere each datagram is
//! its own call. Every call is non-blocking (`MSG_DONTWAIT`): a full socket buffer is
//! `WouldBlock`, never a wait.
//!
//! On Linux a run of equal-sized datagrams (the last may be shorter) goes out as one message
//! of that `sendmmsg` with a `UDP_SEGMENT` control message (UDP GSO): the kernel builds one
//! packet train instead of one packet per datagram, and the receiver still gets separate
//! datagrams. Only datagrams that fit a 1,500-byte path are grouped; the first refusal
//! (a kernel without GSO, a device without checksum offload, a smaller path MTU) turns
//! grouping off for the process and the run is sent again datagram by datagram.
//! `DataPlaneOptions::udp_gso = false` (the apps' `PORTUNUS_DISABLE_UDP_GSO=1`) turns it off from the start (a triage switch, like
//! `PORTUNUS_DISABLE_SPLICE`).
//!
//! Invariants: a [`Batch`] is scratch space, owned by one thread ([`with_batch`]) and borrowed
//! only for synchronous work, so its size does not grow with flows or rules. Slots are
//! [`SLOT`] bytes, more than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
//! IPv6), so a datagram is never cut; a datagram the kernel still reports as truncated is
//! marked and never forwarded. The buffer is zero-initialised lazily by the kernel (a large
//! `calloc` maps untouched pages), so a thread that only ever sees small datagrams keeps one
//! page per slot resident, not 64 KiB.
//!
//! Sockets are registered with the runtime for read readiness only ([`watch_reads`]): every
//! send is a non-blocking call that never waits for write readiness, so asking the reactor
//! for it would only cost an `epoll_wait` wake-up after each send.
//!
//! nix 0.32 has `recvmmsg`/`sendmmsg`, but reading the sent count out of its `sendmmsg`
//! result walks preallocated address slots that a send never fills, so the two calls are
//! made here directly, with the `unsafe` this module alone may contain.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A non-blocking UDP socket watched by the runtime for incoming datagrams (and errors,
/// which the kernel always reports) but not for write readiness.
pub(crate) type DatagramFd = AsyncFd<UdpSocket>;

/// Registers `socket` (which must be non-blocking) with the current runtime's reactor for
/// read readiness. Must run in a runtime's context, like `tokio::net::UdpSocket::from_std`.
pub(crate) fn watch_reads(socket: UdpSocket) -> io::Result<DatagramFd> {
    // SAFETY: `UdpSocket` owns its descriptor: it stays open, and `as_raw_fd` keeps returning
    // it, until the `AsyncFd` drops the socket (nothing here replaces the inner socket).
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)
}

/// Datagrams per system call (and slots per batch).
pub(crate) const BATCH: usize = 32;

/// Bytes per slot: 64 KiB, above every UDP payload an IP packet can carry.
pub(crate) const SLOT: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Option<Box<Batch>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's batch (created on first use). `f` must not wait: the batch is
/// lent for synchronous work only. A nested call (which the data plane never makes) gets a
/// fresh batch rather than a panic.
/// Turns UDP GSO grouping off for the rest of the process.
pub(crate) fn disable_gso() {
    #[cfg(target_os = "linux")]
    linux::GSO_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn with_batch<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(Batch::new)),
        Err(_) => f(&mut Batch::new()),
    })
}

/// Received datagrams and the buffers they sit in.
pub(crate) struct Batch {
    buf: Box<[u8]>,
    /// Datagrams from the last `recv`.
    n: usize,
    lens: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    truncated: [bool; BATCH],
    #[cfg(target_os = "linux")]
    raw: linux::Headers,
}

impl Batch {
    fn new() -> Box<Batch> {
        Box::new(Batch {
            buf: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            n: 0,
            lens: [0; BATCH],
            sources: [None; BATCH],
            truncated: [false; BATCH],
            #[cfg(target_os = "linux")]
            raw: linux::Headers::new(),
        })
    }

    /// Datagrams received by the last [`Batch::recv`].
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Payload of datagram `i`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn payload(&self, i: usize) -> &[u8] {
        &self.buf[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Sender of datagram `i`; `None` when the kernel gave no usable address.
    pub(crate) fn source(&self, i: usize) -> Option<SocketAddr> {
        self.sources[i]
    }

    /// True when datagram `i` did not fit its slot (it is then never forwarded).
    pub(crate) fn truncated(&self, i: usize) -> bool {
        self.truncated[i]
    }

    /// Total payload bytes of datagrams `range`.
    pub(crate) fn bytes(&self, range: Range<usize>) -> u64 {
        self.lens[range].iter().map(|&l| l as u64).sum()
    }

    /// Receives up to [`BATCH`] datagrams without waiting; returns how many (at least one),
    /// or `WouldBlock` when none is queued.
    pub(crate) fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.n = 0;
        let n = self.recv_inner(sock)?;
        self.n = n;
        Ok(n)
    }

    /// Sends datagrams `range` of the last receive (at most [`BATCH`]) through `sock`, to
    /// `dest` or, when `None`, to the socket's connected peer. Returns how many went out (at
    /// least one); a full send buffer is `WouldBlock`.
    pub(crate) fn send(
        &mut self,
        sock: &UdpSocket,
        range: Range<usize>,
        dest: Option<SocketAddr>,
    ) -> io::Result<usize> {
        let range = range.start..range.end.min(self.n);
        if range.is_empty() {
            return Ok(0);
        }
        self.send_inner(sock, range, dest)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! The raw `recvmmsg`/`sendmmsg` calls and the header arrays they read and fill.

    use std::io;
    use std::mem;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::ops::Range;
    use std::os::fd::AsRawFd;
    use std::ptr;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    use super::{BATCH, Batch, SLOT, UdpSocket};
    use nix::errno::Errno;
    use nix::libc;
    use socket2::SockAddr;

    /// `UDP_SEGMENT` from `<linux/udp.h>` (the libc crate has it only for some targets).
    const UDP_SEGMENT: libc::c_int = 103;

    /// Largest datagram grouped for GSO: 1,500 bytes less the IPv6 and UDP headers, so a
    /// group fits any Ethernet-sized path.
    const GSO_MAX_SEGMENT: usize = 1452;

    /// Most datagrams per GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
    const GSO_MAX_SEGMENTS: usize = 64;

    /// Most payload bytes per GSO message: one UDP length field's worth over IPv4.
    const GSO_MAX_BYTES: usize = 65_507;

    /// Set once the kernel refused a GSO message; grouping stays off for the process.
    pub(super) static GSO_REFUSED: AtomicBool = AtomicBool::new(false);

    /// Whether runs may be grouped: not after a refusal, nor once the plane was built with
    /// GSO off (both set [`GSO_REFUSED`]).
    fn grouping_allowed() -> bool {
        !GSO_REFUSED.load(Relaxed)
    }

    /// A control message carrying the segment size of a GSO message; `repr(C)` lays `seg`
    /// out where `CMSG_DATA` points (right after the aligned header) and pads the whole to
    /// `CMSG_SPACE(2)`.
    #[repr(C)]
    struct SegmentCmsg {
        hdr: libc::cmsghdr,
        seg: u16,
    }

    /// One `mmsghdr`, `iovec`, address slot and control message per datagram of a batch.
    /// The pointers inside are rewritten before every call, so moving the struct never
    /// leaves one dangling across calls.
    pub(super) struct Headers {
        hdrs: [libc::mmsghdr; BATCH],
        iovs: [libc::iovec; BATCH],
        names: [libc::sockaddr_storage; BATCH],
        cmsgs: [SegmentCmsg; BATCH],
        /// Datagrams carried by each message of the last send.
        per_message: [usize; BATCH],
    }

    impl Headers {
        pub(super) fn new() -> Headers {
            // SAFETY: `mmsghdr`, `iovec`, `sockaddr_storage` and `cmsghdr` are plain C
            // structs of integers and raw pointers, for which all-zero bytes are a valid
            // value (null pointers, zero lengths, family AF_UNSPEC); so are the arrays of
            // integers beside them.
            unsafe { mem::zeroed() }
        }
    }

    impl Batch {
        pub(super) fn recv_inner(&mut self, sock: &UdpSocket) -> io::Result<usize> {
            let base = self.buf.as_mut_ptr();
            let raw = &mut self.raw;
            for (i, iov) in raw.iovs.iter_mut().enumerate() {
                *iov = libc::iovec { iov_base: base.wrapping_add(i * SLOT).cast(), iov_len: SLOT };
            }
            // Every pointer the kernel follows comes from these array pointers, taken once the
            // arrays are written, so no later borrow of an element invalidates one.
            let iovs = raw.iovs.as_mut_ptr();
            let names = raw.names.as_mut_ptr();
            for (i, hdr) in raw.hdrs.iter_mut().enumerate() {
                hdr.msg_len = 0;
                hdr.msg_hdr.msg_name = names.wrapping_add(i).cast();
                hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_hdr.msg_iov = iovs.wrapping_add(i);
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                hdr.msg_hdr.msg_flags = 0;
            }
            // SAFETY: every one of the BATCH headers points at its own iovec, which covers
            // its own SLOT bytes of `self.buf` (BATCH * SLOT long), and at its own
            // sockaddr_storage with the matching length; all of them live in `self`, which
            // is borrowed mutably for the whole call. A null timeout is allowed.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    raw.hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = (n as usize).min(BATCH);
            for i in 0..n {
                let hdr = &raw.hdrs[i];
                self.lens[i] = (hdr.msg_len as usize).min(SLOT);
                self.truncated[i] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                self.sources[i] = decode(&raw.names[i], hdr.msg_hdr.msg_namelen);
            }
            Ok(n)
        }

        pub(super) fn send_inner(
            &mut self,
            sock: &UdpSocket,
            range: Range<usize>,
            dest: Option<SocketAddr>,
        ) -> io::Result<usize> {
            let grouping = grouping_allowed();
            match self.send_messages(sock, range.clone(), dest, grouping) {
                Err(err) if grouping && self.raw.per_message[0] > 1 && refuses_gso(&err) => {
                    // The first message was a GSO group and the kernel will not take it:
                    // stop grouping, and send this run again datagram by datagram.
                    GSO_REFUSED.store(true, Relaxed);
                    self.send_messages(sock, range, dest, false)
                }
                res => res,
            }
        }

        /// One `sendmmsg` of datagrams `range` (at most BATCH), grouped into GSO messages
        /// when `grouping`; returns how many datagrams the sent messages carried.
        fn send_messages(
            &mut self,
            sock: &UdpSocket,
            range: Range<usize>,
            dest: Option<SocketAddr>,
            grouping: bool,
        ) -> io::Result<usize> {
            let dest = dest.map(SockAddr::from);
            let (name, namelen) = match &dest {
                Some(addr) => (addr.as_ptr().cast_mut().cast::<libc::c_void>(), addr.len()),
                None => (ptr::null_mut(), 0),
            };
            let base = self.buf.as_mut_ptr();
            let lens = &self.lens;
            let raw = &mut self.raw;
            let first = range.start;
            let n = range.len().min(BATCH);
            for k in 0..n {
                let i = first + k;
                raw.iovs[k] = libc::iovec { iov_base: base.wrapping_add(i * SLOT).cast(), iov_len: lens[i] };
            }
            // Group the datagrams into messages: `(first iovec, datagrams)`, and fill the
            // control message of each group of more than one.
            let mut messages = [(0usize, 0usize); BATCH];
            let mut n_messages = 0;
            let mut k = 0;
            while k < n {
                let start = k;
                let seg = lens[first + k];
                let mut total = seg;
                k += 1;
                if grouping && (1..=GSO_MAX_SEGMENT).contains(&seg) {
                    // Equal sizes, the last of the group possibly shorter (but not empty).
                    while k < n && k - start < GSO_MAX_SEGMENTS {
                        let len = lens[first + k];
                        if len == 0 || len > seg || total + len > GSO_MAX_BYTES {
                            break;
                        }
                        total += len;
                        k += 1;
                        if len < seg {
                            break;
                        }
                    }
                }
                if k - start > 1 {
                    let cmsg = &mut raw.cmsgs[n_messages];
                    cmsg.hdr.cmsg_level = libc::SOL_UDP;
                    cmsg.hdr.cmsg_type = UDP_SEGMENT;
                    cmsg.hdr.cmsg_len = (mem::offset_of!(SegmentCmsg, seg) + mem::size_of::<u16>()) as _;
                    cmsg.seg = seg as u16;
                }
                messages[n_messages] = (start, k - start);
                raw.per_message[n_messages] = k - start;
                n_messages += 1;
            }
            // As in `recv_inner`: pointers for the kernel come from the arrays, taken last.
            let iovs = raw.iovs.as_mut_ptr();
            let cmsgs = raw.cmsgs.as_mut_ptr();
            for (m, &(start, count)) in messages[..n_messages].iter().enumerate() {
                let hdr = &mut raw.hdrs[m];
                hdr.msg_len = 0;
                hdr.msg_hdr.msg_name = name;
                hdr.msg_hdr.msg_namelen = namelen;
                hdr.msg_hdr.msg_iov = iovs.wrapping_add(start);
                hdr.msg_hdr.msg_iovlen = count as _;
                hdr.msg_hdr.msg_flags = 0;
                if count > 1 {
                    hdr.msg_hdr.msg_control = cmsgs.wrapping_add(m).cast();
                    hdr.msg_hdr.msg_controllen = mem::size_of::<SegmentCmsg>() as _;
                } else {
                    hdr.msg_hdr.msg_control = ptr::null_mut();
                    hdr.msg_hdr.msg_controllen = 0;
                }
            }
            // SAFETY: the first `n_messages` headers each point at `count` consecutive
            // iovecs, each covering `lens[i] <= SLOT` bytes of datagram `i`'s slot in
            // `self.buf`; at `dest`'s address (alive until the end of this function) or at
            // none; and at their own control message or at none. The kernel only reads
            // through them during the call.
            let sent = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    raw.hdrs.as_mut_ptr(),
                    n_messages as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(raw.per_message[..(sent as usize).min(n_messages)].iter().sum())
        }
    }

    /// The errors with which a kernel, a device or a path refuses a GSO message.
    fn refuses_gso(err: &io::Error) -> bool {
        matches!(
            err.raw_os_error().map(Errno::from_raw),
            Some(Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOPROTOOPT)
        )
    }

    /// The sender of a received datagram, from the address the kernel wrote. IPv6 flow
    /// labels are dropped: a peer is its address, port and scope.
    fn decode(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match libc::c_int::from(name.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the kernel wrote a `sockaddr_in`, and the length
                // covers it; `sockaddr_storage` is sized and aligned for every address type.
                let sin = unsafe { &*ptr::from_ref(name).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a `sockaddr_in6`.
                let sin6 = unsafe { &*ptr::from_ref(name).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    0,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl Batch {
    fn recv_inner(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            let slot = &mut self.buf[n * SLOT..(n + 1) * SLOT];
            match sock.recv_from(slot) {
                Ok((len, source)) => {
                    self.lens[n] = len;
                    self.sources[n] = Some(source);
                    self.truncated[n] = false;
                    n += 1;
                }
                Err(err) if n == 0 => return Err(err),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    fn send_inner(
        &mut self,
        sock: &UdpSocket,
        range: Range<usize>,
        dest: Option<SocketAddr>,
    ) -> io::Result<usize> {
        let mut sent = 0;
        for i in range.take(BATCH) {
            let payload = &self.buf[i * SLOT..i * SLOT + self.lens[i]];
            let res = match dest {
                Some(addr) => sock.send_to(payload, addr),
                None => sock.send(payload),
            };
            match res {
                Ok(_) => sent += 1,
                Err(err) if sent == 0 => return Err(err),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests;
