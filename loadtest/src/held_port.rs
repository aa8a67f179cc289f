//! A loopback port held for a server this program starts: bound but not listening, so the kernel gives it to no
//! other socket while it is held, and the server binds beside it (SO_REUSEADDR on both: tokio, std, nginx and
//! redis-server set it). The port cannot be taken between being chosen and being listened on, and whoever accepts
//! connections there is the server started on it.

use std::net::SocketAddr;

/// A held loopback port; released when dropped.
#[derive(Debug)]
pub struct HeldPort {
    _socket: tokio::net::TcpSocket,
    /// The address held.
    pub addr: SocketAddr,
}

impl HeldPort {
    /// A free loopback port, held until dropped.
    pub fn any() -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = socket.local_addr()?;
        Ok(Self {
            _socket: socket,
            addr,
        })
    }
}
