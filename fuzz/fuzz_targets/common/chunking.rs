//! How the stream-scanning targets read their input: one byte `n` (how many split sizes follow, at most 15),
//! `n` size bytes, then the stream, which they feed cut at those sizes and compare with it fed whole.

/// The split sizes and the stream of an input; `None` for an empty one.
pub fn split(data: &[u8]) -> Option<(Vec<usize>, &[u8])> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    Some((sizes.iter().map(|s| usize::from(*s)).collect(), stream))
}

/// `stream` cut into pieces of the given sizes (0 gives an empty chunk), the rest as one last piece.
pub fn chunks<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes {
        let end = (at + size).min(stream.len());
        out.push(&stream[at..end]);
        at = end;
    }
    out.push(&stream[at..]);
    out
}
