//! Framing for the connections between JobManager and TaskManagers: every message is a
//! little-endian `u32` length followed by that many bytes. Control messages are JSON (small,
//! rare, readable in a packet dump); data frames are bincode.

use std::io::{self, Read, Write};

/// Largest frame accepted: a record batch far beyond this is a bug or a stranger on the port.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Writes one frame in a single `write_all`, so concurrent writers never interleave within one.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {MAX_FRAME}", payload.len()),
        ));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame.
pub fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}: not a Weir peer?"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes a JSON message as one frame.
pub fn write_json<T: serde::Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    write_frame(w, &bytes)
}

/// Reads a JSON message from one frame.
pub fn read_json<T: serde::de::DeserializeOwned>(r: &mut impl Read) -> io::Result<T> {
    let bytes = read_frame(r)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        write_json(&mut buf, &vec![1u32, 2]).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), b"hello");
        assert_eq!(read_json::<Vec<u32>>(&mut r).unwrap(), vec![1, 2]);
        let mut huge = &(u32::MAX.to_le_bytes())[..];
        let e = read_frame(&mut huge).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
