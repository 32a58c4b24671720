//! `Tasker::Channels::Pattern`: a subscription pattern, matched as the dispatch loop matches.
//!
//! Owns exposing the core's pattern language to Ruby code that must select event names the
//! way subscriptions do (forwarding, matchers), so there is one matcher, not two. It must
//! never accept a pattern `subscribe` would refuse.

use magnus::{function, method, prelude::*, Error, RModule, Ruby};
use tasker_channels_core::Pattern;

#[magnus::wrap(class = "Tasker::Channels::Pattern", free_immediately, size)]
pub struct RbPattern(Pattern);

pub fn define(ruby: &Ruby, channels: RModule) -> Result<(), Error> {
    let class = channels.define_class("Pattern", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("parse", function!(RbPattern::parse, 1))?;
    class.define_method("match?", method!(RbPattern::is_match, 1))?;
    class.define_method("to_s", method!(RbPattern::to_s, 0))?;
    Ok(())
}

impl RbPattern {
    fn parse(ruby: &Ruby, text: String) -> Result<Self, Error> {
        Pattern::parse(&text)
            .map(RbPattern)
            .map_err(|invalid| Error::new(ruby.exception_arg_error(), invalid.to_string()))
    }

    fn is_match(&self, name: String) -> bool {
        self.0.matches(&name)
    }

    fn to_s(&self) -> String {
        match &self.0 {
            Pattern::Exact(name) => name.clone(),
            Pattern::Glob(segments) => segments
                .iter()
                .map(|segment| match segment {
                    tasker_channels_core::pattern::Segment::Literal(text) => text.as_str(),
                    tasker_channels_core::pattern::Segment::One => "*",
                    tasker_channels_core::pattern::Segment::Many => "**",
                })
                .collect::<Vec<_>>()
                .join("."),
        }
    }
}
