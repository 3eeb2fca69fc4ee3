//! Kafka's framing: every request and response is a 4-byte big-endian length
//! followed by that many bytes.
//!
//! The proxy reads whole frames (bounded by a maximum size) and keeps the
//! length prefix in the buffer, so a frame it does not change is written to
//! the other side as the very bytes it received.
//!
//! A request frame starts with the request header, which [`super::header`]
//! peeks without decoding the rest.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use super::header::{
    expects_response, peek_correlation_id, peek_request_header, RequestHeaderPeek,
};

/// Size of the length prefix that starts every frame.
pub const LENGTH_PREFIX: usize = 4;

/// Why a frame could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes{hint}")]
    TooLarge {
        size: u64,
        max: usize,
        hint: &'static str,
    },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame of {0} bytes is too short for a request header")]
    TruncatedHeader(usize),
    #[error("malformed request header: {0}")]
    MalformedHeader(&'static str),
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
    #[error("frame of {size} bytes exceeds the whole in-flight budget of {budget} bytes")]
    OverBudget { size: usize, budget: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "too_large",
            FrameError::NegativeLength(_) => "negative_length",
            FrameError::TruncatedHeader(_) | FrameError::MalformedHeader(_) => "malformed",
            FrameError::UnexpectedEof => "truncated",
            FrameError::OverBudget { .. } => "over_budget",
            FrameError::Io(_) => "io",
        }
    }
}

/// One whole frame, length prefix included.
#[derive(Clone)]
pub struct Frame {
    bytes: Bytes,
    /// Held as long as the frame lives: a reservation of a byte budget for
    /// a frame the proxy built (a rehydrated Fetch response), released
    /// once the frame has been written and dropped.
    reservation: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.bytes.len())
            .field("reserved", &self.reservation.is_some())
            .finish()
    }
}

impl Frame {
    /// Wraps bytes that already start with a correct length prefix.
    pub fn from_wire(bytes: Bytes) -> Self {
        Frame {
            bytes,
            reservation: None,
        }
    }

    /// Keeps `reservation` alive as long as this frame (or a clone).
    pub fn holding(mut self, reservation: impl std::any::Any + Send + Sync) -> Self {
        self.reservation = Some(std::sync::Arc::new(reservation));
        self
    }

    /// Builds a frame from a body, adding the length prefix.
    pub fn from_body(body: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(LENGTH_PREFIX + body.len());
        buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
        buf.extend_from_slice(body);
        Frame::from_wire(buf.freeze())
    }

    /// The frame as it travels on the wire.
    pub fn wire(&self) -> &Bytes {
        &self.bytes
    }

    /// The frame without its length prefix.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(LENGTH_PREFIX..)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.len() <= LENGTH_PREFIX
    }

    /// The first bytes in hex, for error messages.
    pub fn hex_prefix(&self) -> String {
        self.bytes
            .iter()
            .take(48)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Encodes a response header and message as one frame, length prefix
/// included, sized exactly before writing.
pub fn encode_response<T: kafka_protocol::protocol::Encodable>(
    header: &kafka_protocol::messages::ResponseHeader,
    header_version: i16,
    response: &T,
    version: i16,
) -> anyhow::Result<Frame> {
    encode_frame(header, header_version, response, version)
}

/// Encodes a header and a message as one frame. Sized first, so even a
/// large message (a Produce of a big value) is written once, into one
/// buffer that starts with the length prefix.
pub fn encode_frame<H, M>(
    header: &H,
    header_version: i16,
    message: &M,
    version: i16,
) -> anyhow::Result<Frame>
where
    H: kafka_protocol::protocol::Encodable,
    M: kafka_protocol::protocol::Encodable,
{
    let size = header.compute_size(header_version)? + message.compute_size(version)?;
    let length = i32::try_from(size)?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + size);
    out.extend_from_slice(&length.to_be_bytes());
    header.encode(&mut out, header_version)?;
    message.encode(&mut out, version)?;
    Ok(Frame::from_wire(out.freeze()))
}

/// A request frame with the client's header bytes as they came and a
/// rewritten body (a Produce whose records the proxy changed): sized
/// first, written once.
pub fn encode_after_header<M: kafka_protocol::protocol::Encodable>(
    header: &[u8],
    message: &M,
    version: i16,
) -> anyhow::Result<Frame> {
    let size = header.len() + message.compute_size(version)?;
    let length = i32::try_from(size)?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + size);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(header);
    message.encode(&mut out, version)?;
    Ok(Frame::from_wire(out.freeze()))
}

/// Reads one frame. Returns `Ok(None)` on a clean end of stream between frames.
///
/// The length is checked before any buffer is allocated, so a peer that
/// announces a huge frame costs nothing. A TLS ClientHello sent to a plaintext
/// port starts with `0x16 0x03`, which reads as a length of about 369 MB and is
/// caught by the same check; the error says so.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_size: usize,
) -> Result<Option<Frame>, FrameError> {
    Ok(read_frame_within(reader, max_frame_size, None)
        .await?
        .map(|(frame, _)| frame))
}

/// The bytes of all request frames held by the proxy at once, across every
/// connection. A frame's size is reserved before its buffer is allocated;
/// the reservation ends when the permit is dropped (after forwarding).
#[derive(Debug, Clone)]
pub struct ByteBudget {
    semaphore: std::sync::Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl ByteBudget {
    pub fn new(total: usize) -> Self {
        let total = total.min(tokio::sync::Semaphore::MAX_PERMITS);
        ByteBudget {
            semaphore: std::sync::Arc::new(tokio::sync::Semaphore::new(total)),
            total,
        }
    }

    /// Bytes currently reserved.
    pub fn in_use(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }
}

/// Like [`read_frame`], but first waits until `budget` has room for the
/// frame, so many large requests queue instead of exhausting memory.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_size: usize,
    budget: Option<&ByteBudget>,
) -> Result<Option<(Frame, Option<tokio::sync::OwnedSemaphorePermit>)>, FrameError> {
    let Some(size) = read_length(reader, max_frame_size).await? else {
        return Ok(None);
    };
    let permit = match budget {
        None => None,
        Some(b) if size > b.total || size > u32::MAX as usize => {
            return Err(FrameError::OverBudget {
                size,
                budget: b.total,
            })
        }
        Some(b) => Some(
            std::sync::Arc::clone(&b.semaphore)
                .acquire_many_owned(size as u32)
                .await
                .expect("the budget semaphore is never closed"),
        ),
    };
    Ok(Some((read_body(reader, size).await?, permit)))
}

/// Reads a frame's length prefix and checks it. Returns `Ok(None)` on a
/// clean end of stream between frames.
pub async fn read_length<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_size: usize,
) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    match reader.read_exact(&mut prefix[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    read_exact_or_eof(reader, &mut prefix[1..]).await?;
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::NegativeLength(size));
    }
    let size = size as usize;
    if size > max_frame_size {
        let hint = if prefix[0] == 0x16 && prefix[1] == 0x03 {
            " (looks like TLS spoken to a plaintext listener)"
        } else {
            ""
        };
        return Err(FrameError::TooLarge {
            size: size as u64,
            max: max_frame_size,
            hint,
        });
    }
    Ok(Some(size))
}

/// Reads the `size` bytes after a length prefix into a whole frame.
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Frame, FrameError> {
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX + size);
    buf.extend_from_slice(&(size as i32).to_be_bytes());
    // Read into the spare capacity: zero-filling first would write every
    // byte of a large frame twice.
    let mut body = reader.take(size as u64);
    while buf.len() < LENGTH_PREFIX + size {
        if body.read_buf(&mut buf).await? == 0 {
            return Err(FrameError::UnexpectedEof);
        }
    }
    Ok(Frame::from_wire(buf.freeze()))
}

async fn read_exact_or_eof<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::UnexpectedEof),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_oversized_frame_before_allocating() {
        let mut data: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00];
        let err = read_frame(&mut data, 100 * 1024 * 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(err.to_string().contains("TLS"), "{err}");
    }

    #[tokio::test]
    async fn budget_is_held_per_frame_and_refuses_what_never_fits() {
        let budget = ByteBudget::new(100);
        let frame = Frame::from_body(&[7u8; 60]);
        let mut r: &[u8] = frame.wire();
        let (_, permit) = read_frame_within(&mut r, 1024, Some(&budget))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(budget.in_use(), 60);
        // A second 60-byte frame waits until the first is released.
        let mut r2: &[u8] = frame.wire();
        let waiting = read_frame_within(&mut r2, 1024, Some(&budget));
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting)
                .await
                .is_err()
        );
        drop(permit);
        assert!(waiting.await.unwrap().is_some());
        let big = Frame::from_body(&[1u8; 200]);
        let mut r3: &[u8] = big.wire();
        assert!(matches!(
            read_frame_within(&mut r3, 1024, Some(&budget)).await,
            Err(FrameError::OverBudget {
                size: 200,
                budget: 100
            })
        ));
    }

    #[tokio::test]
    async fn reads_frames_and_clean_eof() {
        let frame = Frame::from_body(b"hello");
        let mut wire = frame.wire().to_vec();
        wire.extend_from_slice(frame.wire());
        let mut r: &[u8] = &wire;
        let a = read_frame(&mut r, 1024).await.unwrap().unwrap();
        assert_eq!(&a.body()[..], b"hello");
        assert_eq!(a.wire(), frame.wire());
        assert!(read_frame(&mut r, 1024).await.unwrap().is_some());
        assert!(read_frame(&mut r, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut r: &[u8] = &[0, 0, 0, 10, 1, 2];
        assert!(matches!(
            read_frame(&mut r, 1024).await,
            Err(FrameError::UnexpectedEof)
        ));
        let mut r: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut r, 1024).await,
            Err(FrameError::UnexpectedEof)
        ));
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut r, 1024).await,
            Err(FrameError::NegativeLength(-1))
        ));
    }
}
