"""What media an upload may be (MEDIAGATE_ACCEPT, MEDIAGATE_MAX_DURATION), judged on
what probing found, when the upload finishes."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mediagate.models import MediaFacts


@dataclass(frozen=True)
class MediaPolicy:
    accept: Collection[str] = ()  # kinds (video, audio, image); empty: anything
    max_duration: float | None = None

    @property
    def refuses_anything(self) -> bool:
        return bool(self.accept) or self.max_duration is not None

    def refusal(self, facts: MediaFacts | None, probe_error: str | None) -> str | None:
        """Why the media may not be kept, or None."""
        if not self.refuses_anything:
            return None
        if facts is None:
            return f"the file is not media this server accepts ({probe_error or 'not probed'})"
        if self.accept and facts.kind.value not in self.accept:
            return f"the file is {facts.kind.value}; this server accepts {', '.join(self.accept)}"
        if (
            self.max_duration is not None
            and facts.duration_s is not None
            and facts.duration_s > self.max_duration
        ):
            return (
                f"the media lasts {facts.duration_s:g} s; this server accepts at most "
                f"{self.max_duration:g} s"
            )
        return None
