//! Dependency graphs: cycle detection and topological order over string-named nodes.

use std::collections::HashMap;

/// Finds one dependency cycle, returned as the path `a -> b -> ... -> a` (first node repeated
/// at the end). `deps(i)` lists the indices node `i` depends on. Deterministic: nodes are
/// visited in index order.
pub fn find_cycle(names: &[&str], deps: impl Fn(usize) -> Vec<usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = names.len();
    let mut mark = vec![Mark::New; n];
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, its deps, next dep index).
        let mut stack: Vec<(usize, Vec<usize>, usize)> = vec![(root, deps(root), 0)];
        mark[root] = Mark::Open;
        while let Some((node, ds, next)) = stack.last_mut() {
            if *next < ds.len() {
                let d = ds[*next];
                *next += 1;
                if d >= n {
                    continue;
                }
                match mark[d] {
                    Mark::New => {
                        mark[d] = Mark::Open;
                        let dd = deps(d);
                        stack.push((d, dd, 0));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|(s, _, _)| *s == d).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|(s, _, _)| names[*s].to_owned())
                            .collect();
                        cycle.push(names[d].to_owned());
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Index of each name, for resolving references.
pub fn name_index<'a>(names: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    names.into_iter().enumerate().map(|(i, n)| (n, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_no_cycle_in_a_dag() {
        let names = ["a", "b", "c"];
        let deps = |i: usize| match i {
            1 => vec![0],
            2 => vec![0, 1],
            _ => vec![],
        };
        assert_eq!(find_cycle(&names, deps), None);
    }

    #[test]
    fn names_the_cycle() {
        let names = ["a", "b", "c", "d"];
        let deps = |i: usize| match i {
            0 => vec![3],
            1 => vec![0],
            2 => vec![1],
            3 => vec![2],
            _ => vec![],
        };
        let cycle = find_cycle(&names, deps).unwrap();
        assert_eq!(cycle, ["a", "d", "c", "b", "a"]);
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let names = ["a"];
        assert_eq!(find_cycle(&names, |_| vec![0]).unwrap(), ["a", "a"]);
    }
}
