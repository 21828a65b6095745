"""An OpenFeature provider over cutover's migrations, and a hook that counts evaluations.

The flag key is the migration's name and the targeting key is the unit. A boolean flag answers
"does new serve this unit?", a string flag names the arm ("legacy" or "new"). Needs the
``openfeature`` extra (``pip install 'cutover[openfeature]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import FlagNotFoundError, TargetingKeyMissingError, TypeMismatchError
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagResolutionDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider, Metadata

from cutover import runtime as rt
from cutover.errors import InvalidInput, UnknownMigration
from cutover.flags._core import Evaluation, count_exposure, evaluate, known_here
from cutover.model import Arm

ARMS = {"legacy": Arm.LEGACY, "new": Arm.NEW}


class ExposureHook(Hook):
    """Counts each successful evaluation of a cutover flag as an exposure of the arm it chose,
    in this process's telemetry. It recognises cutover's answers by their variant ("legacy" or
    "new"), so it also counts what another provider (OFREP's, say) fetched from cutover."""

    def after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        arm = ARMS.get(details.variant or "")
        if arm is not None and details.error_code is None:
            count_exposure(hook_context.flag_key, arm)


class CutoverProvider(AbstractProvider):
    """Resolves flags from the migrations' states this process holds in memory: never a store
    round trip per evaluation. Emits PROVIDER_CONFIGURATION_CHANGED with the changed flags when
    a stored state changes (polled, and at once on PostgreSQL's NOTIFY).

    ``known`` decides which flag keys exist (by default: those with a stored state, or a
    migration declared in this process); others resolve to FLAG_NOT_FOUND.
    """

    def __init__(self, known: Callable[[str], bool] = known_here) -> None:
        super().__init__()
        self._known = known
        self._hook = ExposureHook()

    def get_metadata(self) -> Metadata:
        return Metadata(name="cutover")

    def get_provider_hooks(self) -> list[Hook]:
        return [self._hook]

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        rt.current().ensure_started()
        rt.watch(self._changed)

    def shutdown(self) -> None:
        rt.unwatch(self._changed)

    def _changed(self, names: list[str]) -> None:
        self.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=names, message="migration states changed")
        )

    def _evaluate(self, flag_key: str, context: EvaluationContext | None) -> Evaluation:
        unit = context.targeting_key if context is not None else None
        if not unit:
            raise TargetingKeyMissingError(
                f"flag {flag_key!r} routes by unit: set the evaluation context's targeting key"
                " to the user, tenant or session"
            )
        try:
            return evaluate(flag_key, unit, self._known, count=False)
        except (UnknownMigration, InvalidInput) as error:
            raise FlagNotFoundError(str(error)) from None

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        found = self._evaluate(flag_key, evaluation_context)
        return FlagResolutionDetails(
            value=found.arm is Arm.NEW,
            reason=found.reason,
            variant=found.variant,
            flag_metadata=found.metadata,
        )

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        found = self._evaluate(flag_key, evaluation_context)
        return FlagResolutionDetails(
            value=found.variant,
            reason=found.reason,
            variant=found.variant,
            flag_metadata=found.metadata,
        )

    def _mismatch(self, flag_key: str, kind: str) -> Any:
        raise TypeMismatchError(
            f"flag {flag_key!r} is a migration: read it as a boolean (new serves) or a string"
            f" (the arm), not as {kind}"
        )

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._mismatch(flag_key, "an integer")  # type: ignore[no-any-return]

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._mismatch(flag_key, "a float")  # type: ignore[no-any-return]

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._mismatch(flag_key, "an object")  # type: ignore[no-any-return]


__all__ = ["CutoverProvider", "ExposureHook"]
