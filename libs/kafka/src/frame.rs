//! Kafka's framing: every request and response is a big-endian `i32` size
//! followed by that many bytes.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The size field is negative or above the limit; nothing of the body was read.
    #[error("request of {size} bytes refused (socket.request.max.bytes is {max})")]
    TooLarge {
        /// The size the client announced.
        size: i64,
        /// The limit.
        max: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a request")]
    Truncated,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame's body; `None` when the peer closed the connection
/// cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut size[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size).map_err(|_| FrameError::TooLarge {
        size: i64::from(size),
        max,
    })?;
    if len > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let mut body = BytesMut::zeroed(len);
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some(body.freeze()))
}

/// Writes `body` as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let size = i32::try_from(body.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame larger than 2 GiB")
    })?;
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_i32(size);
    out.put_slice(body);
    writer.write_all(&out).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_eof_between_frames_is_clean() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").await.unwrap();
        write_frame(&mut wire, b"").await.unwrap();
        let mut r = &wire[..];
        assert_eq!(
            read_frame(&mut r, 100).await.unwrap().unwrap(),
            Bytes::from_static(b"hello")
        );
        assert_eq!(
            read_frame(&mut r, 100).await.unwrap().unwrap(),
            Bytes::new()
        );
        assert!(read_frame(&mut r, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_negative_and_truncated_frames_are_refused() {
        let mut r = &[0u8, 0, 1, 0][..];
        assert!(matches!(
            read_frame(&mut r, 255).await,
            Err(FrameError::TooLarge { size: 256, .. })
        ));
        let mut r = &[0xffu8, 0xff, 0xff, 0xff][..];
        assert!(matches!(
            read_frame(&mut r, 255).await,
            Err(FrameError::TooLarge { size: -1, .. })
        ));
        let mut r = &[0u8, 0, 0, 5, 1, 2][..];
        assert!(matches!(
            read_frame(&mut r, 255).await,
            Err(FrameError::Truncated)
        ));
        let mut r = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut r, 255).await,
            Err(FrameError::Truncated)
        ));
    }
}
