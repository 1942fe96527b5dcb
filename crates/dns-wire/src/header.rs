//! The fixed 12-byte header: ID, flags and counts read and written in place.

pub(crate) fn read_u16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads the header ID of any packet with at least two bytes.
pub fn packet_id(packet: &[u8]) -> Option<u16> {
    read_u16(packet, 0)
}

/// Overwrites a packet's ID.
pub fn set_packet_id(packet: &mut [u8], id: u16) {
    if packet.len() >= 2 {
        packet[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// Reads the response code (low four bits) and the TC bit of a response.
pub fn response_rcode_tc(response: &[u8]) -> Option<(u8, bool)> {
    let flags = read_u16(response, 2)?;
    Some(((flags & 0xF) as u8, flags & 0x0200 != 0))
}
