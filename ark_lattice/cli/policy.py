"""``ark-lattice policy``: show, check, dry-run and set the node's policy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ark_lattice.cli.context import Application, open_node, run

app = typer.Typer(help="The CEL policy that decides what enters and leaves this node.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _read(path: str) -> str:
    from ark_lattice.errors import UsageError

    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


@app.command("show")
def show(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Print the policy in force and its digest."""
    application: Application = ctx.obj

    async def go() -> Any:
        async with await open_node(application) as node:
            return node.load_policy()

    policy = run(go())
    if json_:
        application.print_json(
            {
                "digest": policy.digest,
                "source": policy.source,
                "rules": [
                    {"id": r.id, "effect": r.effect.value, "hooks": [h.value for h in r.hooks],
                     "condition": r.condition, "line": r.line}
                    for r in policy.rules
                ],
                "rate_limits": [
                    {"id": r.id, "scope": r.scope.value, "hooks": [h.value for h in r.hooks],
                     "rate": r.rate, "burst": r.burst}
                    for r in policy.rate_limits
                ],
                "strikes_to_block": policy.limits.strikes_to_block,
                # every [limits] key in force, the per-peer budgets included (docs/operator.md)
                "limits": dataclasses.asdict(policy.limits),
            }
        )
        return
    typer.echo(policy.text, nl=not policy.text.endswith("\n"))
    application.console.print(f"# digest {policy.digest}", style="dim")


@app.command("check")
def check(ctx: typer.Context, file: Annotated[str, typer.Argument(metavar="FILE")]) -> None:
    """Validate a policy file; a bad rule is named with its line."""
    from ark_lattice.policy import Policy

    policy = Policy.load(_read(file), file)
    ctx.obj.console.print(
        f"{file}: OK, {len(policy.rules)} rules, {len(policy.rate_limits)} rate limits"
    )


@app.command("test")
def test(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="Policy file.")],
    input_file: Annotated[
        str, typer.Argument(metavar="INPUT", help='JSON: {"hook": H, ...inputs} or a list of them.')
    ],
    json_: JsonOption = False,
) -> None:
    """Dry-run a policy on sample inputs: the decision and the rules that fired."""
    from ark_lattice.errors import UsageError
    from ark_lattice.policy import Policy

    application: Application = ctx.obj
    policy = Policy.load(_read(file), file)
    try:
        doc = json.loads(_read(input_file))
    except ValueError as exc:
        raise UsageError(f"{input_file} is not valid JSON: {exc}") from None
    cases = doc if isinstance(doc, list) else [doc]
    results: list[dict[str, Any]] = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or "hook" not in case:
            raise UsageError(f"{input_file}: case {i + 1} needs a \"hook\" and its inputs")
        inputs = {k: v for k, v in case.items() if k != "hook"}
        decision = policy.decide(case["hook"], inputs)
        results.append(
            {
                "hook": str(decision.hook),
                "allowed": decision.allowed,
                "fired": list(decision.fired),
                "reason": decision.reason,
                "errors": [{"rule": e.rule, "message": e.message} for e in decision.errors],
            }
        )
    if json_:
        if isinstance(doc, list):
            from ark_lattice.cli.output import listing

            application.print_json(listing("policy-tests", results))
        else:
            application.print_json(results[0])
        return
    for r in results:
        verdict = "[green]allow[/]" if r["allowed"] else "[red]deny[/]"
        fired = ", ".join(r["fired"]) or "no rule"
        application.console.print(f"{r['hook']}: {verdict} ({fired}) — {r['reason']}")


@app.command("set")
def set_(
    ctx: typer.Context, file: Annotated[str, typer.Argument(metavar="FILE")], json_: JsonOption = False
) -> None:
    """Validate FILE and make it this node's policy; a running node reloads it at once."""
    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import NodeNotRunning

    application: Application = ctx.obj
    text = _read(file)

    async def go() -> Any:
        async with await open_node(application) as node:
            return await node.set_policy(text, file)

    policy = run(go())
    try:
        request(application, "policy_reload")
        where, reloaded = "the running node reloaded it", True
    except NodeNotRunning:
        where, reloaded = "the node uses it when it starts", False
    if json_:
        application.print_json({"digest": policy.digest, "source": file, "reloaded": reloaded})
        return
    application.console.print(f"policy {policy.digest[:16]} set; {where}")
