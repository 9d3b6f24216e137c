//! Saying a repeated failure once: the run log, plan and the sync summary.

/// A registry found not reachable, or refusing the credentials, fails every repository with
/// the same words: the first line that says them keeps them, later ones say so briefly
/// (logs, plan, sync summary).
#[derive(Default)]
pub struct Told(std::collections::HashSet<String>);

impl Told {
    pub fn brief(&mut self, text: &str) -> String {
        const MARKS: [(&str, &str); 2] = [
            (": not reachable: ", ": not reachable (as above)"),
            (
                ": authentication failed (",
                ": authentication failed (as above)",
            ),
        ];
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let Some((at, mark, short)) = MARKS
                .iter()
                .find_map(|(m, s)| line.find(m).map(|at| (at, m, s)))
            else {
                out.push_str(line);
                continue;
            };
            let said = format!("{mark}{}", line[at + mark.len()..].trim_end());
            if self.0.insert(said) {
                out.push_str(line);
            } else {
                out.push_str(&line[..at]);
                out.push_str(short);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unreachable_registry_is_explained_once() {
        let mut told = super::Told::default();
        let why = "src: list tags: not reachable: connection refused (nothing answered)";
        assert_eq!(told.brief(&format!("a: {why}\n")), format!("a: {why}\n"));
        assert_eq!(
            told.brief(&format!("b: {why}\n")),
            "b: src: list tags: not reachable (as above)\n"
        );
        assert_eq!(told.brief("c: fine\n"), "c: fine\n");
        let refused = "dst: list tags: authentication failed (credentials rejected); check the username and password for this registry";
        assert_eq!(
            told.brief(&format!("a: {refused}")),
            format!("a: {refused}")
        );
        assert_eq!(
            told.brief(&format!("b: {refused}")),
            "b: dst: list tags: authentication failed (as above)"
        );
    }
}
