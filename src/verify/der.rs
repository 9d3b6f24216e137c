//! Just enough DER to read what ring and webpki do not hand out: a key's SubjectPublicKeyInfo,
//! and the SAN and Fulcio extensions of a certificate webpki has already validated. Definite
//! lengths of at most 4 bytes, no recursion: a length past the input, or any nesting depth,
//! ends as `None`, never a panic.

/// One TLV: its tag, its value, and the whole encoding (tag and length included).
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub whole: &'a [u8],
}

/// The TLV at the start of `der`, and what follows it.
pub fn next(der: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = der.len() - rest.len();
    let (value, after) = rest.split_at(len);
    Some((
        Tlv {
            tag,
            value,
            whole: &der[..header + len],
        },
        after,
    ))
}

/// The TLV at the start of `der` if its tag is `tag`: (its value, what follows).
pub fn expect(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, rest) = next(der)?;
    (t.tag == tag).then_some((t.value, rest))
}

/// Every TLV of a constructed value, in order; `None` if one is malformed.
pub fn items(mut der: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (t, rest) = next(der)?;
        out.push(t);
        der = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_and_long_forms_are_refused() {
        assert!(next(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(next(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(next(&[0x30]).is_none());
        let (t, rest) = next(&[0x04, 0x81, 0x01, 0xaa, 0x05]).unwrap();
        assert_eq!(
            (t.tag, t.value, t.whole.len(), rest),
            (4, &[0xaa][..], 4, &[5][..])
        );
        assert!(items(&[0x02, 0x01, 0x00, 0x02]).is_none());
    }
}
