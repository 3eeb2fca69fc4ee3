//! The open-file limit.
//!
//! Every client connection holds two sockets: the client's and its own
//! upstream connection. Add the listeners (one per broker), the HTTP API's
//! connections and storage's, and the default soft limit of many systems
//! (1024) caps the proxy near 500 clients. So at start-up the soft limit is
//! raised to the hard limit, which the administrator (or the container
//! runtime) sets; the proxy never raises the hard limit itself. Clients the
//! proxy can hold: about `(soft limit - 100) / 2`.

/// The soft limit before and after, and the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

impl OpenFiles {
    /// Client connections this limit leaves room for (two sockets each,
    /// about 100 descriptors kept for everything else).
    pub fn client_connections(&self) -> u64 {
        self.now.saturating_sub(100) / 2
    }
}

/// Raises the soft open-file limit to the hard limit.
pub fn raise_open_files_limit() -> std::io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(OpenFiles {
        before,
        now: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let raised = raise_open_files_limit().unwrap();
        assert_eq!(raised.now, raised.hard);
        assert!(raised.now >= raised.before);
        assert_eq!(raise_open_files_limit().unwrap().before, raised.hard);
        let many = OpenFiles {
            before: 1024,
            now: 20_100,
            hard: 20_100,
        };
        assert_eq!(many.client_connections(), 10_000);
    }
}
