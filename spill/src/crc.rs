//! CRC-32C (Castagnoli) of short buffers, the size of a record (a few hundred bytes).
//!
//! Why not just the `crc32c` crate: below 768 bytes it runs the SSE 4.2 `crc32` instruction as one
//! dependent chain, 8 bytes per step with a 3-cycle latency, so a 268-byte record costs ~100 cycles
//! while the CPU could retire one `crc32` per cycle. Here a buffer of 72 bytes up to
//! [`MAX_SPLIT`] is cut into three equal runs whose CRCs are computed in one interleaved loop (three
//! independent chains), then joined with two carry-less multiplications (PCLMULQDQ): ~3x fewer
//! cycles for a record. Shorter and longer buffers go to the `crc32c` crate, which already runs
//! three chains from 768 bytes up, and so does every CPU without SSE 4.2 and PCLMULQDQ (checked at
//! run time) and every other architecture. Both paths give the same value, which the tests check on
//! random inputs of every length up to past [`MAX_SPLIT`].
//!
//! Joining runs: the CRC register is linear, so the register after `A ‖ B ‖ C` (each `n` bytes) is
//! `shift(crc(A), 2n) ⊕ shift(crc₀(B), n) ⊕ crc₀(C)`, where `crc₀` starts from a zero register and
//! `shift(r, k)` feeds `k` zero bytes, i.e. multiplies by `x^(8k) mod P`. That product is one
//! `pclmulqdq` of `r` by the constant `x^(8k-33) mod P` (from [`SHIFT`]) followed by one `crc32` of
//! the 64-bit result, which reduces it (the `-33` undoes the `x^32` of that `crc32` and the one-bit
//! offset of a bit-reflected carry-less product).

/// The CRC-32C polynomial, bit-reflected (x^32 implied).
const POLY: u32 = 0x82F6_3B78;

/// Buffers from this many bytes up (to [`MAX_SPLIT`]) run as three chains: below, the join costs
/// more than it saves.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MIN_SPLIT: usize = 72;

/// Buffers longer than this go to the `crc32c` crate (three chains over 8 KiB or 256-byte blocks):
/// it bounds [`SHIFT`] to 129 constants.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MAX_SPLIT: usize = 24 * 64;

/// `SHIFT[m]` = `x^(64m - 33) mod P`, bit-reflected: the multiplier that feeds `8m` zero bytes
/// through a CRC register (see the module doc). `SHIFT[0]` is unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SHIFT: [u32; MAX_SPLIT / 24 * 2 + 1] = {
    // Multiplies a bit-reflected residue by x, modulo P.
    const fn times_x(a: u32) -> u32 {
        if a & 1 == 0 { a >> 1 } else { (a >> 1) ^ POLY }
    }
    let mut table = [0u32; MAX_SPLIT / 24 * 2 + 1];
    // x^31: bit-reflected, x^k is bit 31 - k.
    let mut power = 1u32;
    table[1] = power;
    let mut m = 2;
    while m < table.len() {
        let mut i = 0;
        while i < 64 {
            power = times_x(power);
            i += 1;
        }
        table[m] = power;
        m += 1;
    }
    table
};

/// The CRC-32C of `data` continuing from the finished CRC `crc` (0 for a fresh one): the same value
/// as `crc32c::crc32c_append(crc, data)`. (The log itself only needs [`record`]; this is the
/// general form the tests check at every length.)
#[cfg(test)]
pub(crate) fn append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if x86::detected() {
        // SAFETY: `detected` checked that this CPU has SSE 4.2 and PCLMULQDQ, the target features
        // `x86::update` is compiled with.
        return !unsafe { x86::update(!crc, data) };
    }
    crc32c::crc32c_append(crc, data)
}

/// The CRC-32C of a record's frame: of `len` (4 bytes), `written_ms` (8 bytes), then the payload,
/// as [`crate::format::record_crc`] documents; the header words go straight into the register.
#[inline]
pub(crate) fn record(len: u32, written_ms: u64, payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if x86::detected() {
        // SAFETY: as in `append`: the CPU has the target features of `x86::record`.
        return !unsafe { x86::record(len, written_ms, payload) };
    }
    record_portable(len, written_ms, payload)
}

/// [`record`] through the `crc32c` crate alone.
pub(crate) fn record_portable(len: u32, written_ms: u64, payload: &[u8]) -> u32 {
    let mut covered = [0u8; 12];
    covered[..4].copy_from_slice(&len.to_le_bytes());
    covered[4..].copy_from_slice(&written_ms.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&covered), payload)
}

/// The portable path, whatever the CPU: what [`append`] must agree with.
#[cfg(test)]
pub(crate) fn append_portable(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64,
        _mm_cvtsi32_si128, _mm_cvtsi64_si128, _mm_cvtsi128_si64,
    };

    use super::{MAX_SPLIT, MIN_SPLIT, SHIFT};

    /// Whether this CPU has what [`update`] needs (cached by `std` after the first call).
    #[inline]
    pub(super) fn detected() -> bool {
        std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }

    /// [`super::record`]'s register before the final inversion.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn record(len: u32, written_ms: u64, payload: &[u8]) -> u32 {
        let state = _mm_crc32_u64(u64::from(_mm_crc32_u32(!0, len)), written_ms) as u32;
        update(state, payload)
    }

    /// Feeds `data` through the CRC register `state` (not inverted: the caller inverts).
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn update(state: u32, data: &[u8]) -> u32 {
        if !(MIN_SPLIT..=MAX_SPLIT).contains(&data.len()) {
            return !crc32c::crc32c_append(!state, data);
        }
        let run = data.len() / 24 * 8;
        let (a, rest) = data.split_at(run);
        let (b, rest) = rest.split_at(run);
        let (c, tail) = rest.split_at(run);
        let (mut ca, mut cb, mut cc) = (u64::from(state), 0u64, 0u64);
        for ((a, b), c) in a
            .chunks_exact(8)
            .zip(b.chunks_exact(8))
            .zip(c.chunks_exact(8))
        {
            ca = _mm_crc32_u64(ca, word(a));
            cb = _mm_crc32_u64(cb, word(b));
            cc = _mm_crc32_u64(cc, word(c));
        }
        let m = run / 8;
        let joined = clmul(ca, SHIFT[2 * m]) ^ clmul(cb, SHIFT[m]);
        let mut crc = _mm_crc32_u64(0, joined) ^ cc;
        let mut words = tail.chunks_exact(8);
        for w in &mut words {
            crc = _mm_crc32_u64(crc, word(w));
        }
        // The last 0-7 bytes as at most three steps (4, 2, 1 bytes) instead of one per byte.
        let mut crc = crc as u32;
        let mut rest = words.remainder();
        if let Some((four, tail)) = rest.split_first_chunk::<4>() {
            crc = _mm_crc32_u32(crc, u32::from_le_bytes(*four));
            rest = tail;
        }
        if let Some((two, tail)) = rest.split_first_chunk::<2>() {
            crc = _mm_crc32_u16(crc, u16::from_le_bytes(*two));
            rest = tail;
        }
        if let Some(&byte) = rest.first() {
            crc = _mm_crc32_u8(crc, byte);
        }
        crc
    }

    /// The carry-less product of a 32-bit register and a 32-bit constant (63 bits).
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn clmul(register: u64, constant: u32) -> u64 {
        let product = _mm_clmulepi64_si128(
            _mm_cvtsi64_si128(register as i64),
            _mm_cvtsi32_si128(constant as i32),
            0,
        );
        _mm_cvtsi128_si64(product) as u64
    }

    #[inline(always)]
    fn word(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        u64::from_le_bytes(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(append(0, b"123456789"), 0xE306_9283);
        let zeros = [0u8; 268];
        assert_eq!(append(0, &zeros), append_portable(0, &zeros));
    }

    #[test]
    fn every_length_and_start_agrees_with_the_portable_path() {
        let mut bytes = vec![0u8; MAX_SPLIT + 100];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for byte in &mut bytes {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
        for len in 0..bytes.len() {
            for start in [0, 1, 7] {
                let data = &bytes[start..(start + len).min(bytes.len())];
                for crc in [0, 0xFFFF_FFFF, seed as u32] {
                    assert_eq!(
                        append(crc, data),
                        append_portable(crc, data),
                        "len {len} start {start} crc {crc:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn record_agrees_with_the_portable_path() {
        let payload: Vec<u8> = (0..2000u32).map(|i| (i * 131 % 251) as u8).collect();
        for len in [0, 1, 12, 71, 72, 254, 256, 1000, 2000] {
            for ms in [0, 1, u64::MAX, 1_700_000_000_123] {
                assert_eq!(
                    record(len as u32, ms, &payload[..len]),
                    record_portable(len as u32, ms, &payload[..len])
                );
            }
        }
    }

    proptest! {
        #[test]
        fn random_inputs_agree(crc: u32, data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            prop_assert_eq!(append(crc, &data), append_portable(crc, &data));
        }

        #[test]
        fn random_records_agree(ms: u64, data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let len = data.len() as u32;
            prop_assert_eq!(record(len, ms, &data), record_portable(len, ms, &data));
        }
    }
}
