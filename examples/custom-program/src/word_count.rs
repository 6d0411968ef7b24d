//! The `word-count` program: a keyed running count of words over a small, bounded, in-memory
//! text, written to standard output as `word count` lines. It shows the pieces a custom program
//! needs: arguments, a source, `key_by`, a `KeyedProcessFunction` with `ValueState`, and a sink.

use std::io::Write;

use weir_core::error::OperatorError;
use weir_core::sink::SinkContext;
use weir_core::source::VecSource;
use weir_core::{
    DataStream, KeyedContext, KeyedProcessFunction, Program, ProgramArgs, ProgramError, Record,
    Sink, SinkWriter, StreamEnv, ValueState, WatermarkStrategy,
};

/// The text counted when no `text` argument is given.
const DEFAULT_TEXT: &str = "the quick brown fox jumps over the lazy dog \
                            the dog barks and the fox runs";

const ARGS: &[(&str, &str)] = &[
    (
        "text",
        "the text to count, words separated by spaces (default: a short sentence)",
    ),
    ("repeat", "how many times the text is fed in (default 1)"),
];

/// The program, for the registry.
pub fn program() -> Program {
    Program {
        name: "word-count",
        description: "running count per word over a small bounded text (custom-program example)",
        args: ARGS,
        build,
    }
}

/// Counts each word it sees; one count per word, kept in keyed state.
#[derive(Clone)]
struct CountWords {
    count: ValueState<u64>,
}

impl KeyedProcessFunction<String, String, (String, u64)> for CountWords {
    fn process_element(
        &mut self,
        word: String,
        ctx: &mut KeyedContext<'_, String, (String, u64)>,
    ) -> Result<(), OperatorError> {
        let n = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, n)?;
        ctx.emit((word, n))
    }
}

/// Prints `word count` lines to standard output.
#[derive(Clone, Copy)]
struct PrintSink;

struct PrintWriter;

impl Sink<(String, u64)> for PrintSink {
    fn create_writer(
        &self,
        _ctx: &SinkContext,
    ) -> Result<Box<dyn SinkWriter<(String, u64)>>, OperatorError> {
        Ok(Box::new(PrintWriter))
    }
}

impl SinkWriter<(String, u64)> for PrintWriter {
    fn write(&mut self, rec: Record<(String, u64)>) -> Result<(), OperatorError> {
        let (word, n) = rec.value;
        // A closed stdout (e.g. `| head`) is a sink failure, not a panic.
        writeln!(std::io::stdout().lock(), "{word} {n}").map_err(OperatorError::Sink)
    }
}

/// The counting dataflow over `words`, without a sink (tests attach their own).
pub fn build_dataflow(env: &StreamEnv, words: Vec<String>) -> DataStream<(String, u64)> {
    // Timestamps are just positions: this program uses no event time.
    let source = VecSource::new(words.into_iter().enumerate().map(|(i, w)| (i as i64, w)));
    env.source("words", source, WatermarkStrategy::none())
        .key_by(|w: &String| w.clone())
        .process(CountWords {
            count: ValueState::new("count"),
        })
        .name("count-words")
        .uid("word-count")
}

fn build(env: &StreamEnv, args: &ProgramArgs) -> Result<(), ProgramError> {
    let text = args.get_str("text").unwrap_or(DEFAULT_TEXT);
    let repeat: usize = args.get_or("repeat", 1)?;
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return Err(ProgramError::BadArgument {
            name: "text".into(),
            message: "has no words; give it some text or remove it".into(),
        });
    }
    let words = std::iter::repeat_n(words, repeat).flatten().collect();
    build_dataflow(env, words)
        .sink("print", PrintSink)
        .uid("word-count-print");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_core::{CollectSink, EnvConfig};

    #[test]
    fn counts_words() {
        let env = StreamEnv::new(EnvConfig {
            parallelism: 2,
            ..Default::default()
        });
        let words = "a b a c a b".split(' ').map(String::from).collect();
        let out = CollectSink::new();
        build_dataflow(&env, words).sink("collect", out.clone());
        env.execute().unwrap();
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (w, n) in out.values() {
            let prev = last.insert(w.clone(), n).unwrap_or(0);
            assert_eq!(n, prev + 1, "counts of {w} go up by one");
        }
        assert_eq!(
            last,
            BTreeMap::from([("a".into(), 3), ("b".into(), 2), ("c".into(), 1)])
        );
    }

    #[test]
    fn arguments_are_checked() {
        let env = StreamEnv::new(EnvConfig::default());
        let bad = ProgramArgs::new(BTreeMap::from([("repeat".to_string(), "many".to_string())]));
        let e = program().build(&env, &bad).unwrap_err().to_string();
        assert!(e.starts_with("spec.job.args.repeat:"), "{e}");
        let empty = ProgramArgs::new(BTreeMap::from([("text".to_string(), "  ".to_string())]));
        assert!(program().build(&env, &empty).is_err());
    }
}
