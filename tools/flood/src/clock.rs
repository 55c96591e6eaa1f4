//! The run's shared time base, and waits finer than the runtime's timer.
//!
//! Every thread measures from one `Epoch` (an `Instant` taken before any thread starts), so the
//! intended send time a publisher writes into a payload and the receive time a subscriber takes
//! on another thread are on the same monotonic clock: latency is a subtraction, with no clock
//! synchronisation involved.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The instant all of a run's nanosecond timestamps count from.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    /// Starts the epoch now.
    pub fn now() -> Epoch {
        Epoch(Instant::now())
    }

    /// Nanoseconds from the epoch to `t` (0 for an instant before it).
    #[inline]
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_nanos() as u64
    }

    /// The instant `ns` nanoseconds after the epoch.
    #[inline]
    pub fn at(&self, ns: u64) -> Instant {
        self.0 + Duration::from_nanos(ns)
    }
}

/// Lets this thread's sleeps end within about a microsecond of their deadline instead of the
/// default 50 µs timer slack: a publish scheduled every 200 µs must not leave late by 50 µs, as
/// that lateness would be measured as latency.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Blocks until `fd` is readable (or writable too, when `writable`) or `wait` has passed, with
/// nanosecond resolution. Used for the last stretch before a deadline closer than the runtime's
/// millisecond timer can express; the thread has nothing else to run meanwhile. True when the
/// socket became ready, false on timeout.
pub fn poll_fd(fd: RawFd, writable: bool, wait: Duration) -> bool {
    let mut events = libc::POLLIN;
    if writable {
        events |= libc::POLLOUT;
    }
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfd` and `ts` are valid for the call; a null sigmask keeps the current one.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) > 0 }
}

/// Like `poll_fd` over several sockets, each `(fd, writable)`. True when one became ready.
pub fn poll_fds(fds: &[(RawFd, bool)], wait: Duration) -> bool {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, w)| libc::pollfd {
            fd,
            events: if w { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfds` holds `pfds.len()` valid entries and `ts` is valid for the call.
    unsafe { libc::ppoll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, &ts, std::ptr::null()) > 0 }
}

/// Longest spin before a deadline.
const SPIN_MAX: Duration = Duration::from_micros(200);

/// Nanoseconds all threads have spun in `Waker::wait_until`: CPU time the tool used waiting,
/// not working, subtracted from its CPU share when the report judges whether it kept up.
static SPUN_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Time spent spinning so far (all threads).
pub fn spun() -> Duration {
    Duration::from_nanos(SPUN_NS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Ends waits for scheduled sends on time. A sleeping thread wakes tens of µs after its
/// deadline (measured ~55 µs median on this project's VM, timer slack already 1 ns), and every
/// µs a send leaves late is counted as latency. So the wait ends early by the lateness seen so
/// far (a running average) and spins the rest, never more than `SPIN_MAX`: a few per cent of a
/// core at thousands of sends per second, instead of a lateness as large as the latency measured.
#[derive(Debug)]
pub struct Waker {
    early_ns: std::cell::Cell<u64>,
}

impl Default for Waker {
    fn default() -> Self {
        Waker { early_ns: std::cell::Cell::new(50_000) }
    }
}

impl Waker {
    /// Waits on `fd` until `deadline`: sleeps until shortly before it, then spins. Returns
    /// early when the socket becomes ready.
    pub fn wait_until(&self, fd: RawFd, writable: bool, deadline: Instant) {
        let now = Instant::now();
        let early = Duration::from_nanos(self.early_ns.get());
        let target = deadline.checked_sub(early).unwrap_or(deadline);
        if target > now {
            if poll_fd(fd, writable, target - now) {
                return;
            }
            // Learn how late the wake-up was (an average over recent waits, capped).
            let late = Instant::now().saturating_duration_since(target).as_nanos() as u64;
            let avg = (self.early_ns.get() * 7 + late.min(SPIN_MAX.as_nanos() as u64)) / 8;
            self.early_ns.set(avg);
        }
        let began = Instant::now();
        let stop = deadline.min(began + SPIN_MAX);
        while Instant::now() < stop {
            std::hint::spin_loop();
        }
        let spun = began.elapsed().as_nanos() as u64;
        SPUN_NS.fetch_add(spun, std::sync::atomic::Ordering::Relaxed);
    }
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (utime + stime) of another process, from `/proc/<pid>/stat`.
pub fn pid_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 1 is the state; utime and stime are fields 14 and 15 of the whole
    // line, i.e. indices 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// CPU time the whole host has spent busy (user, nice, system, irq, softirq, steal over all
/// CPUs, from `/proc/stat`): with this process's and the node's CPU time subtracted, what other
/// work on the host took during a run.
pub fn host_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| v.get(i).copied().unwrap_or(0)).sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

/// Time the threads of process `pid` spent runnable but waiting for a CPU (the second field of
/// `/proc/<pid>/task/*/schedstat`): how much other work on the machine delayed them, the main
/// source of noise on a shared host.
/// On a VM this includes waking an idle vCPU (tens of µs per wake-up), so a lightly loaded run
/// that sleeps and wakes thousands of times per second shows waits without any contention.
pub fn pid_runqueue_wait(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += text.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_round_trips() {
        let e = Epoch::now();
        let t = e.at(1_234_567);
        assert_eq!(e.ns(t), 1_234_567);
    }

    #[test]
    fn a_wait_that_ends_in_a_spin_is_counted_as_spun() {
        // A socket nobody writes to: the wait can only end at its deadline.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        let waker = Waker::default();
        let before = spun();
        let start = Instant::now();
        // Shorter than the waker's initial early margin (50 µs): the whole wait is a spin.
        waker.wait_until(fd, false, start + Duration::from_micros(30));
        assert!(start.elapsed() >= Duration::from_micros(30), "waited until the deadline");
        assert!(spun() > before, "the spin was counted");
    }

    #[test]
    fn own_cpu_is_readable_both_ways() {
        assert!(pid_cpu(std::process::id()).is_some());
        assert!(pid_runqueue_wait(std::process::id()).is_some());
        assert!(host_busy().is_some());
        let _ = process_cpu();
    }
}
