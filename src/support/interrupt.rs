//! Ctrl-C and `kill`: a run that writes into a cache that exists ends with
//! one line, leaves no temporary file of its own, and exits as a shell
//! expects of a signal (128 + its number).
//!
//! No signal handler runs here. [`on_interrupt`] blocks SIGINT and SIGTERM
//! in the calling thread, and so in every thread it starts afterwards (a
//! thread inherits its creator's mask), and starts one thread that waits for
//! them with `sigwait`: the signal is then an ordinary event on an ordinary
//! thread, which may take locks, allocate and remove files, none of which a
//! handler may do. Programs this process runs start with an empty mask (the
//! standard library's `Command` resets it), so Ctrl-C still reaches them.
//!
//! Once a signal came, [`requested`] is true: writers stop making new
//! temporary files ([`crate::support::files::TempNames::next`] waits for the
//! exit instead), the progress display stops drawing, and an error a worker
//! meets because its temporary file was removed under it is not reported
//! (the caller checks [`requested`] before printing one).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM came, with [`on_interrupt`] waiting for it.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Never returns: for a thread that has nothing to do but wait for the exit
/// an interrupt brings, instead of going on with work the exit will cut.
pub fn wait_for_exit() -> ! {
    loop {
        thread::park();
    }
}

/// Arranges for SIGINT and SIGTERM to run `clean_up` with the signal's
/// number on a thread of its own, then end the process with `128 + number`.
///
/// Call it before starting any other thread: a thread started earlier
/// keeps SIGINT and SIGTERM unblocked, and the signal may go to it and kill
/// the process the default way.
pub fn on_interrupt(clean_up: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    let set = signals();
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for.
    let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if blocked != 0 {
        return Err(io::Error::from_raw_os_error(blocked));
    }
    thread::Builder::new()
        .name("interrupt".to_owned())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` is initialised and `signal` is a valid place
            // for the number. sigwait fails only for an invalid set.
            if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                return;
            }
            REQUESTED.store(true, Ordering::SeqCst);
            // The exit must come whatever the clean-up meets: a panic there
            // would end this thread alone, and leave the others waiting
            // for an exit that never comes.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| clean_up(signal)));
            std::process::exit(128 + signal);
        })?;
    Ok(())
}

/// The set {SIGINT, SIGTERM}.
fn signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset adds
    // to it; both only write into `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}
