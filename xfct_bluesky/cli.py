"""Command-line interface ``xfct-bluesky``.

demo    a small simulated low-dose tomography end to end, stored in Tiled
serve   a standalone Tiled server on the data folder (loopback, API key)
view    watch a scan from a browser: progress, dose, the latest maps, the live shifts and slice (loopback, token)
shell   IPython with the beamline profile (simulated hardware by default)
import  store the field's files (synApps MDA, flyXRF, XRF-Maps, PyXRF, DXchange) in Tiled as runs
ls      recent runs: plan, source format, sample, angles, dose
show    one run's metadata and streams
replay  store runs kept in the backup folder (the server was away) into Tiled
recover store the runs of an acquisition that died (kill -9, power) from the journal into Tiled
fit     fit a stored run's full spectra (ours or imported): element maps, their errors, the calibration
reconstruct  align and reconstruct a stored tomography; store the volumes in Tiled (and DXchange HDF5)
dose-study   resolution at equal dose: few long against many short projections
ioc     the microprobe's caproto IOC (simulated hardware over Channel Access, loopback by default)
check   every PV of a beamline configuration (--beamline FILE), answering or not, before anything moves
paper-table  the founding paper's CC peak widths of Zn and DPC, on the simulated egg
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from . import _cli_checks as checks
from ._cli_checks import CommandError, OptionError

_data_dir = checks.data_dir


def _api_key(data_dir: Path, given: str | None) -> str:
    """The given key, else the one stored in the data folder (created, mode 0600)."""
    if given:
        return given
    from .storage.server import API_KEY_FILE

    path = data_dir / API_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


# ---------------------------------------------------------------- commands ---
def _demo_fit_line(res) -> str:
    """The demo's line on its live spectrum fit."""
    if not res.fit_uid:
        return "(none: the live spectrum fit stored no run)"
    zn = "" if res.fit_zn is None else f": Zn {res.fit_zn[0]:.0f} +- {res.fit_zn[1]:.0f} counts in all"
    return f"run {res.fit_uid[:8]} (live spectrum fit, per pixel counts and errors{zn})"


def cmd_demo(args) -> int:
    from .demo import run_demo

    res = run_demo(_data_dir(args), n_angles=args.n_angles, shape=(args.size, args.size),
                   total_dose=args.total_dose, seed=args.seed, output=args.output)
    print(f"""
Demo tomography done in {res.seconds:.1f} s: {res.n_angles} projections of {res.shape[0]}x{res.shape[1]} px,
{res.total_dose:.3g} Gy in total.

  run uid     {res.uid}
  data        {res.data_dir}   (Tiled catalog in tiled/, HDF5 spectra in assets/)
  overview    {res.figure}
  alignment   run {res.alignment_uid[:8]} (live DPC alignment, linked by raw_uid); error against the
              simulator's true runout: {res.alignment_error[0]:.3f} px (y), {res.alignment_error[1]:.3f} px (x)
{chr(10).join("              " + line for line in _alignment_lines(res.alignment_summary or {}, "final"))}
  fit         {_demo_fit_line(res)}
  volumes     run {(res.reconstruction_uid or '(none)')[:8]} (live reconstruction: Zn by MLEM, phase by FBP,
              linked by raw_uid; Zn from {(res.element_maps or {}).get("Zn", "the ROI window")})

Query it:
  xfct-bluesky ls
  xfct-bluesky show {res.uid[:8]}

or from Python:
  from tiled.client import from_uri
  from tiled.queries import Key
  from xfct_bluesky.storage import embedded_server, runs_container, load_tomo
  with embedded_server("{res.data_dir}") as server:
      cat = runs_container(from_uri(server.uri))
      run = cat["{res.uid}"]
      tomo = load_tomo(run)            # tomo.theta, tomo.maps["Zn"] as (n_angles, ny, nx)
      cat.search(Key("start.plan_name") == "xfct_tomo")
""")
    return 0


def cmd_serve(args) -> int:
    from .storage.folder import advertise_server, prepare_data_folder
    from .storage.server import API_KEY_FILE, serve_standalone

    data_dir = _data_dir(args)
    if args.catalog is not None:  # its form first: a bad option, before anything is written
        from .storage.postgres import CatalogURIError, check_catalog_uri

        try:
            check_catalog_uri(args.catalog, option="--catalog")
        except CatalogURIError as err:
            raise OptionError(str(err)) from None
    # Checks the folder, creates tiled/data and assets, and points a moved folder's catalog into it;
    # a PostgreSQL --catalog: its server answers (before that; tiled's child checks, or initialises, its schema).
    folder = prepare_data_folder(data_dir, read_only=False, catalog=args.catalog)
    try:
        key = _api_key(data_dir, args.api_key)
    except OSError as err:
        raise CommandError(f"cannot set up the data folder {data_dir} ({err.strerror}: {err.filename}); "
                           "give a writable --data-dir") from None
    print(f"Tiled server on http://{args.host}:{args.port} for {data_dir}\n"
          + (f"catalog and tables in {folder.database} (arrays and assets in the data folder)\n"
             if folder.database else "") +
          f"API key in {data_dir / API_KEY_FILE} (or the one given); clients:\n"
          f"  from tiled.client import from_uri\n"
          f"  c = from_uri('http://{args.host}:{args.port}', api_key=open('{data_dir / API_KEY_FILE}').read().strip())",
          flush=True)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # what this machine's commands dial
    with advertise_server(data_dir, f"http://{local}:{args.port}"):  # `ls`, `show`... use this server
        # tiled (which creates a new catalog) stops with this process; its banner's key is filtered out
        return serve_standalone(folder, host=args.host, port=args.port, api_key=key)


def profile_dir() -> Path:
    """The profile_collection folder: $XFCT_BLUESKY_PROFILE, else the one beside the package."""
    env = os.environ.get("XFCT_BLUESKY_PROFILE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "profile_collection"


#: The IPython profile (history, logs) of ``xfct-bluesky shell``, in the user's IPython directory.
SHELL_PROFILE = "profile_xfct_bluesky"


def cmd_shell(args) -> int:
    """IPython running the profile's startup files, its own state (history.sqlite, log/, pid/, security/) kept in
    ``<IPython dir>/profile_xfct_bluesky``, never in the profile folder (a checkout, or a shared one)."""
    import IPython
    from IPython.paths import get_ipython_dir
    from traitlets.config import Config

    prof = profile_dir()
    startup = sorted((prof / "startup").glob("*.py")) if (prof / "startup").is_dir() else []
    if not startup:
        print(f"no profile at {prof}: set XFCT_BLUESKY_PROFILE to a profile_collection folder", file=sys.stderr)
        return 2
    hardware = "epics" if args.epics else (os.environ.get("XFCT_BLUESKY_HARDWARE") or "").lower() or None
    if args.beamline:  # checked before IPython starts: a bad file is refused naming the key and the fix
        from .beamline import load_beamline
        from .beamline.config import check_microprobe

        try:
            config = load_beamline(args.beamline)
            if hardware is None and config.beam is not None:  # a file stating its beam: the plans run on its records
                hardware = "beamline"
            if hardware == "beamline":
                check_microprobe(config)  # the beam: section and the fly raster's roles
            elif hardware == "epics":
                from .session import _microprobe_prefix

                _microprobe_prefix(config, os.environ.get("XFCT_BLUESKY_PREFIX"))  # the simulated IOC's layout
        except ValueError as err:  # BeamlineConfigError is one
            raise OptionError(str(err)) from None
        os.environ["XFCT_BLUESKY_BEAMLINE"] = str(config.path)
        what = {"beamline": "the plans' microprobe on these records, the beam from the file's beam: section",
                None: "simulated (the file has no beam: section for the plans' microprobe on its records)"}
        print(f"{config.beamline}: its records as `beamline`; the microprobe `mp`: {what.get(hardware, hardware)}",
              file=sys.stderr)
    os.environ["XFCT_BLUESKY_HARDWARE"] = hardware or "sim"
    if args.data_dir:
        os.environ["XFCT_BLUESKY_DATA"] = str(_data_dir(args))
    config = Config()
    config.InteractiveShellApp.exec_files = [str(path) for path in startup]  # in order, one namespace, __file__
    state = Path(get_ipython_dir()) / SHELL_PROFILE
    IPython.start_ipython(argv=[f"--profile-dir={state}"], config=config)
    return 0


def _source(start: dict) -> str:
    """Where a run's data came from: "bluesky" for a run acquired here, else the imported file's format."""
    source = start.get("source")
    if not isinstance(source, dict) or "format" not in source:
        return "bluesky"
    formats = source["format"] if isinstance(source["format"], list) else [source["format"]]
    kinds = sorted(set(map(str, formats)))
    label = kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)
    if len(formats) > 1:
        label += f" x{len(formats)}"
    return label + (" + flyXRF" if "flyxrf" in source else "")


_LS_HEADER = (f"{'uid':8s}  {'time':16s}  {'plan':20s} {'source':28s} {'sample':24s} {'angles':>9} "
              f"{'dose':>11}  status")


def _summary(start: dict, stop: dict | None = None) -> str:
    """One ``ls`` line: the angles and the dose delivered (the stop document's events; of those planned if
    fewer), and the exit status ("running?" without a stop document)."""
    import datetime

    when = datetime.datetime.fromtimestamp(start.get("time", 0)).strftime("%Y-%m-%d %H:%M")
    planned = start.get("n_angles", start.get("num_points", len(start.get("angles") or []) or None))
    done = (stop or {}).get("num_events", {}).get("primary") if stop else None
    n = "" if planned is None and done is None else (
        f"{done}/{planned}" if done is not None and planned is not None and done != planned
        else str(planned if planned is not None else done))
    dose = start.get("total_dose")
    per = start.get("dose_per_projection")
    if isinstance(per, int | float) and done is not None:
        dose = per * done  # delivered: an aborted 39-of-60 run gave 39 projections' dose
    dose_s = f"{dose:.3g} Gy" if isinstance(dose, int | float) else ""
    status = (stop or {}).get("exit_status", "running?")
    return (f"{start['uid'][:8]}  {when}  {start.get('plan_name', ''):20s} {_source(start):28.28s} "
            f"{str(start.get('sample', '')):24.24s} {n:>9} {dose_s:>11}  {status}")


def cmd_ls(args) -> int:
    with checks.open_session(args, read_only=True) as session:
        cat = session.catalog
        runs = list(cat.values().tail(args.n)) if len(cat) else []
        print(_LS_HEADER)
        for run in runs:
            print(_summary(run.metadata["start"], run.metadata.get("stop")))
        if not runs:
            print("(no runs yet: try `xfct-bluesky demo`, or `xfct-bluesky import FILE...` for your own data)")
    return 0


def cmd_import(args) -> int:
    from .callbacks import is_tomography
    from .importers import import_files

    asset_dir = Path(args.asset_dir).expanduser() if args.asset_dir else _data_dir(args) / "assets"
    flyxrf = False if args.no_flyxrf else (Path(args.flyxrf).expanduser() if args.flyxrf else None)
    with checks.open_session(args) as session:
        cat = session.catalog
        try:
            results = import_files(args.paths, cat, tomo=args.tomo, sample=args.sample, asset_dir=asset_dir,
                                   theta_pv=args.theta_pv, flyxrf=flyxrf)
        except ValueError as err:  # every file checked and composed first: nothing was written
            raise CommandError(str(err)) from None
        for r in results:
            print(f"{(r.uid or '-')[:8]:8s}  {r.outcome:8s}  {r.path}: {r.reason}")
        uids = list(dict.fromkeys(r.uid for r in results if r.outcome == "imported"))
        skipped = sum(r.outcome == "skipped" for r in results)
        print(f"{len(uids)} run(s) imported, {skipped} file(s) skipped")
        for uid in uids:
            start = cat[uid].metadata["start"]
            hint = (f"; `xfct-bluesky reconstruct {uid[:8]}` aligns and reconstructs it"
                    if is_tomography(start) else "")
            print(f"run {uid}: {_source(start)}, quantities {', '.join(start.get('quantities', {}))}{hint}")
    return 0


def _alignment_lines(summary: dict, label: str = "alignment") -> list[str]:
    """The lines ``show`` prints for a dpc_alignment run's ``alignment`` summary."""
    cons = summary.get("consistency") or {}

    def num(v):
        return f"{v:.4g}" if isinstance(v, int | float) else "?"

    lines = [f"{label}: {summary.get('method', '?')} on {summary.get('channel', '?')}, "
             f"{'applied' if summary.get('applied') else 'NOT applied (zero shifts)'}",
             f"  reason: {summary.get('reason', '')}"]
    if "before" in cons or "after" in cons:
        on = f" on {cons['channel']}" if cons.get("channel") else ""
        lines.append(f"  consistency (reprojection error{on}): before {num(cons.get('before'))} -> "
                     f"after {num(cons.get('after'))}")
    elif cons.get("note"):
        lines.append(f"  consistency: {cons['note']}")
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    lines += [f"  warning: {w}" for w in summary.get("warnings") or []]
    return lines


def cmd_show(args) -> int:
    import json

    with checks.open_session(args, read_only=True) as session:
        run = None
        for container in (session.catalog, session.derived):  # a scan, else a run derived from one
            try:
                run = container[args.uid] if container is not None else None
            except (KeyError, ValueError):  # ValueError: a partial uid under 5 characters (bluesky-tiled-plugins)
                continue
            break
        if run is None:
            print(f"no run {args.uid!r} in the catalog; `xfct-bluesky ls` lists them", file=sys.stderr)
            return 1
        start = run.metadata["start"]
        stop = run.metadata.get("stop") or {}
        print(_LS_HEADER)
        print(_summary(start, stop))
        keep = ("plan_name", "sample", "n_angles", "shape", "pixel_size", "dwell", "energy", "flux", "spot_size",
                "dose_per_projection", "total_dose", "estimated_duration", "order", "theta_key", "simulation")
        print(json.dumps({k: start[k] for k in keep if k in start}, indent=2, default=str))
        print(f"exit status: {stop.get('exit_status', 'running?')}, events: {stop.get('num_events', {})}")
        for name in run:
            print(f"stream {name}: {', '.join(run[name].metadata.get('data_keys', {}) or [])}")
        summary = start.get("alignment")
        if not isinstance(summary, dict):  # a raw run: the newest dpc_alignment run derived from it
            summary, label = None, "alignment"
            try:
                from .quantities import ALIGNMENT_PLAN
                from .storage import derived_runs

                found = derived_runs(session.derived, start["uid"], ALIGNMENT_PLAN) if session.derived else []
                if found:
                    derived = found[-1].metadata["start"]
                    summary, label = derived.get("alignment"), f"alignment (run {derived['uid'][:8]})"
            except Exception as err:  # the lines are extra: never fail show for them
                logging.getLogger(__name__).info("show: no derived alignment runs found: %s", err)
        else:
            label = "alignment"
        if isinstance(summary, dict):
            print("\n".join(_alignment_lines(summary, label)))
    return 0


def _store_kept(args, store, subdir: str, what: str) -> int:
    """Store the runs kept as JSON Lines in a folder of the data folder (backup, journal) into Tiled."""
    directory = Path(args.directory).expanduser() if args.directory else _data_dir(args) / subdir
    if not directory.is_dir():
        print(f"no {what} folder {directory}: nothing to do", file=sys.stderr)
        return 1
    with checks.open_session(args, journal=False) as session:  # the command itself stores what the journal holds
        results = store(directory, session.catalog)
        if (directory / "derived").is_dir():  # the derived runs' files, into the derived container
            results += store(directory / "derived", session.derived)
    for path, uid, outcome in results:
        print(f"{(uid or '-')[:8]:8s}  {outcome}  {path}")
    failed = [r for r in results if r[1] is None and not r[2].startswith("in progress")]
    live = [r for r in results if r[2].startswith("in progress")]
    print(f"{len(results) - len(failed) - len(live)} run(s) stored, {len(failed)} kept in {directory}"
          + (f", {len(live)} still being acquired" if live else "") if results else f"no {what} files in {directory}")
    return 1 if failed else 0


def cmd_replay(args) -> int:
    from .storage import replay_directory

    return _store_kept(args, replay_directory, "backup", "backup")


def cmd_recover(args) -> int:
    from .storage.journal import JOURNAL_SUBDIR, recover_journal

    return _store_kept(args, recover_journal, JOURNAL_SUBDIR, "journal")


def _on_dask(args, run, tomo, element_maps) -> dict:
    """``client`` and ``sources`` for ``reconstruct --scheduler``: the workers read the run's own maps from Tiled."""
    if not args.scheduler:
        return {}
    from .analysis.fitting.maps import FITTED
    from .distributed import tiled_sources

    own = [e for e, src in element_maps.items() if not str(src).startswith(FITTED) and e in tomo.maps]
    return {"client": args.scheduler, "sources": tiled_sources(run, own, maps=tomo.maps)}


def cmd_reconstruct(args) -> int:
    from .analysis.fitting.maps import FITTED
    from .analysis.tomo import center_from_tomopy
    from .callbacks import is_tomography
    from .reconstruction import reconstruct_tomo, use_fitted_maps, write_dxchange
    from .storage import load_tomo

    elements = [e.strip() for e in args.elements.split(",") if e.strip()]  # checks.check_reconstruct: not empty
    with checks.open_session(args) as session:
        cat = session.catalog
        try:
            run = cat[args.uid]
        except (KeyError, ValueError):
            print(f"no run {args.uid!r} in the catalog; `xfct-bluesky ls` lists them", file=sys.stderr)
            return 1
        start = run.metadata["start"]
        if not is_tomography(start):
            what = (f"an imported {_source(start)} file of one map, not a tomography; import the projections "
                    "together as one: `xfct-bluesky import --tomo FILE...`" if start.get("plan_name") == "import"
                    else f"a {start.get('plan_name')!r} run")
            print(f"run {args.uid!r} is {what}; reconstruct takes an xfct_tomo run or an imported tomography",
                  file=sys.stderr)
            return 1
        tomo, element_maps = use_fitted_maps(load_tomo(run), session.derived, elements)  # fitted, where a fit is
        try:
            rec = reconstruct_tomo(tomo, elements=elements, algorithm=args.algorithm, iterations=args.iterations,
                                   subsets=args.subsets, align=args.align, align_method=args.align_method,
                                   channel=args.channel, refine=args.refine,
                                   center=(center_from_tomopy(args.tomopy_center) if args.tomopy_center is not None
                                           else args.center),
                                   progress=lambda text: print(f"  {text}", flush=True),
                                   **_on_dask(args, run, tomo, element_maps))
        except ValueError as err:
            print(f"xfct-bluesky reconstruct: {err}", file=sys.stderr)
            return 1
        data_keys = run["primary"].metadata.get("data_keys") or {}  # the maps' units as recorded (imported: cts/s)
        units = {name: data_keys.get(tomo.maps.data_key(name), {}).get("units") for name in rec.aligned
                 if name in tomo.maps}
        units = {name: unit for name, unit in units.items() if unit}
        units.update({e: "counts" for e, source in element_maps.items() if source.startswith(FITTED)})
        from .reconstruction import publish

        uid = publish(rec, session.derived_writer)
    print(f"reconstructed {', '.join(rec.volumes)} of run {tomo.uid[:8]} ({rec.algorithm}"
          f"{f', {rec.iterations} iterations' if rec.algorithm != 'fbp' else ''}, {rec.align} alignment, "
          f"axis at column {rec.center:.2f}): volumes {next(iter(rec.volumes.values())).shape}")
    print("element maps: " + ", ".join(f"{e} from {source}" for e, source in element_maps.items()
                                       if e in rec.volumes))
    print(f"stored as run {uid} (plan_name xfct_reconstruction, raw_uid {tomo.uid}) in the derived container")
    if args.dxchange:
        path = write_dxchange(args.dxchange, rec, units=units or None)
        print(f"DXchange file {path}")
    return 0


def _print_fit(result: dict, start: dict, key: str, derived_uid: str | None) -> None:
    """What ``fit`` prints: the calibration, per element the total counts, the deviance per channel."""
    import numpy as np

    cal, info = result["calibration"], result["calibration_fit"]
    n, shape = len(result["theta"]), result["deviance"].shape[1:]
    print(f"fitted run {start['uid'][:8]} ({start.get('plan_name', '?')}, {n} projection(s) of "
          f"{' x '.join(map(str, shape))} px, spectra {key!r}): {len(result['elements'])} line families")
    how = (f"fitted on the summed spectra of {info['projections']} projection(s), {info['counts']:.3g} counts, "
           f"from {result['energy_source']}; deviance {info['deviance_per_dof']:.3f} per degree of freedom"
           if info else "given, not refined")
    print(f"calibration ({how}):")
    print(f"  E(i) = {cal.offset:.5g} + {cal.gain:.6g} i + {cal.quadratic:.3g} i^2 keV; FWHM offset "
          f"{cal.fwhm_offset:.4g} keV, Fano' {cal.fanoprime:.4g}; incident {cal.incident_energy:.4g} keV; Compton "
          f"angle {cal.compton_angle:.4g} deg; tail {cal.f_tail:.3g}, step {cal.f_step:.3g}, escape {cal.escape:.3g}")
    print(f"{'element':8s} {'total counts':>13s} {'+- sigma':>10s} {'per pixel':>10s}")
    for e in result["elements"]:
        counts, sigma = result["counts"][e], result["sigma"][e]
        total, error = float(counts.sum(dtype=np.float64)), float(np.sqrt((sigma.astype(np.float64) ** 2).sum()))
        print(f"{e:8s} {total:13.6g} {error:10.3g} {total / counts.size:10.3g}")
    for name, count in result["held"].items():
        print(f"{name} held at its share of each pixel's counts (too few to fit per pixel) in {count} of {n} "
              "projection(s)")
    per_channel = result["deviance"] / max(result["fitted_channels"], 1)
    print(f"deviance per channel: median {np.median(per_channel):.3f}, mean {per_channel.mean():.3f} over "
          f"{per_channel.size} pixels ({result['fitted_channels']} channels fitted; near 1 where the model fits)")
    for text in result["warnings"][:5]:
        print(f"  warning: {text}")
    if derived_uid:
        print(f"stored as run {derived_uid} (plan_name live_spectrum_fit, raw_uid {start['uid']}) in the derived "
              "container; `xfct-bluesky reconstruct` and the live analysis use its maps")


def cmd_fit(args) -> int:
    from .analysis.fitting import read_maps_override
    from .callbacks import LiveWorker
    from .callbacks.fit import LiveSpectrumFit, energy_axis, spectra_key
    from .storage.reading import spectra_rows

    elements = [e.strip() for e in args.elements.split(",") if e.strip()] if args.elements else None
    calibration, refine, energy_range = "auto", None, None
    if args.calibration != "auto":  # checks.check_fit read it once already
        override = read_maps_override(Path(args.calibration).expanduser())
        calibration, refine, energy_range = override.calibration, True, override.energy_range
        elements = elements or list(override.elements) or None
    with checks.open_session(args) as session:
        try:
            run = session.catalog[args.uid]
        except (KeyError, ValueError):
            print(f"no run {args.uid!r} in the catalog; `xfct-bluesky ls` lists them", file=sys.stderr)
            return 1
        start = run.metadata["start"]
        data_keys = (run["primary"].metadata.get("data_keys") or {}) if "primary" in run else {}
        key = spectra_key(data_keys, start)
        if key is None:
            raise CommandError(f"run {args.uid!r} ({start.get('plan_name')}) has no full spectra (an external data "
                               "key of channels): nothing to fit; `xfct-bluesky show` lists its streams")
        if calibration == "auto":
            try:
                energy_axis(start, data_keys[key], int(data_keys[key]["shape"][-1]))
            except ValueError as err:
                raise CommandError(f"run {args.uid!r}: {err}") from None
        read_row = spectra_rows(run, key)  # through the server: it may be on another machine than the files
        fit = LiveSpectrumFit(emit=session.derived_writer, elements=elements, calibration=calibration,
                              refine=refine, method=args.method, energy_range=energy_range, threads=None,
                              hold_background=checks.FIT_BACKGROUNDS[args.background],
                              spectra=lambda _key, row: read_row(row),
                              fitted_by="xfct-bluesky fit", worker=LiveWorker("xfct-bluesky-fit"))
        for name, doc in run.documents():
            fit(name, doc)
        fit.wait()
        result = fit.results.get(start["uid"])
        if result is None:
            why = f"{type(fit.errors[0]).__name__}: {fit.errors[0]}" if fit.errors else (
                "the run records no element maps: give --elements, e.g. Ca,Fe,Zn")
            raise CommandError(f"run {args.uid!r} was not fitted: {why}")
    _print_fit(result, start, key, result["derived_uid"])
    return 0


def cmd_dose_study(args) -> int:
    from .dose_study import dose_study, format_study, markdown_table, study_figure

    res = dose_study(size=args.size, rows=args.rows, seeds=checks.int_list("--seeds", args.seeds),
                     algorithm=args.algorithm, iterations=args.iterations, cell_diameter=args.cell_diameter,
                     schedules=checks.dose_schedules(args), alignments=checks.dose_alignments(args),
                     fit=args.fit, pipeline=args.pipeline, progress=lambda text: print(f"  {text}", flush=True))
    table = format_study(res)
    output = checks.output_dir(args, "dose-study")
    output.mkdir(parents=True, exist_ok=True)
    (output / "dose-study.txt").write_text(table + "\n")
    (output / "dose-study.md").write_text(markdown_table(res) + "\n")
    figure = study_figure(res, output / "dose-study.png")
    print(table)
    print(f"\n{res.seconds:.0f} s; table {output / 'dose-study.txt'}, figure {figure}")
    return 0


def cmd_paper_table(args) -> int:
    from .paper import format_table, paper_figure, paper_table
    from .session import Session

    data_dir = _data_dir(args)
    output = checks.output_dir(args, "paper")
    with Session(data_dir, store=not args.no_store, live=False, persistent_md=False) as session:
        rows = paper_table(seed=args.seed, shape=(args.size, args.size), region=args.region,
                           upsample=args.upsample, session=session)
    table = format_table(rows)
    output.mkdir(parents=True, exist_ok=True)
    (output / "paper-table.txt").write_text(table + "\n")
    figure = paper_figure(rows, output / "paper-figure.png", upsample=args.upsample)
    print(table)
    print(f"\ntable  {output / 'paper-table.txt'}\nfigure {figure}")
    if not args.no_store:
        print("runs   " + ", ".join(sorted({r.uid[:8] for r in rows})) + f" (dwell_pair_series) in {data_dir}")
    return 0


# ------------------------------------------------------------------ parser ---
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xfct-bluesky", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command")

    def with_data_dir(p):
        p.add_argument("--data-dir", help="data folder (default $XFCT_BLUESKY_DATA or the user data dir)")
        return p

    p = with_data_dir(sub.add_parser("demo", help="a small simulated low-dose tomography end to end"))
    p.add_argument("--n-angles", type=int, default=60)
    p.add_argument("--size", type=int, default=56, help="map side in pixels (300 nm)")
    p.add_argument("--total-dose", type=float, default=5e6, help="Gy for the whole tomography")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="folder for the overview PNG (default <data dir>/demo)")
    p.set_defaults(func=cmd_demo, check=checks.check_demo)

    p = with_data_dir(sub.add_parser("serve", help="standalone Tiled server on the data folder"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="default: generated once and kept in <data dir>/api_key (mode 0600)")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("--catalog", help="a PostgreSQL catalog, postgresql://USER@HOST:PORT/DATABASE, for the catalog "
                   "and the tables (the password from PGPASSWORD or ~/.pgpass, never in the URI; a new database is "
                   "initialised); default the data folder's SQLite tiled/catalog.db")
    p.set_defaults(func=cmd_serve, check=checks.check_serve)

    p = with_data_dir(sub.add_parser(
        "import", help="store the field's files in Tiled as runs (MDA, flyXRF, XRF-Maps, PyXRF, DXchange)",
        description="Store files of the facilities' software in the catalog as bluesky runs, one per file, or "
        "with --tomo one tomography of them all (sorted by theta). Formats are detected from the content. A "
        "file already imported (same sha256) is skipped; if any file cannot be imported, nothing is written."))
    p.add_argument("paths", nargs="+", metavar="PATH", help="the files")
    p.add_argument("--tomo", action="store_true", help="one tomography run of all the files, one event per angle")
    p.add_argument("--sample", help="the runs' sample name (default: the file's, if it has one)")
    p.add_argument("--theta-pv", help="MDA / XRF-Maps: the extra PV holding the rotation angle (deg), e.g. "
                   "2xfm:m53.VAL (default: the motor described as 'tomo rotation'; /MAPS/Scan/theta)")
    p.add_argument("--flyxrf", help="a fly-scan MDA file's flyXRF spectra file (default: looked for where "
                   "XRF-Maps looks, ../flyXRF/<stem>_*__0.h5)")
    p.add_argument("--no-flyxrf", action="store_true", help="import MDA fly scans without their flyXRF spectra")
    p.add_argument("--asset-dir", help="a folder the Tiled server reads, for spectra copied out of formats it "
                   "cannot read in place (default <data dir>/assets, what `xfct-bluesky serve` reads)")
    p.add_argument("--uri", help="a running Tiled server (default: open the data folder in-process); "
                   f"one that does not answer within {checks.CONNECT_TIMEOUT:g} s is reported")
    p.add_argument("--api-key", help="API key for --uri")
    p.set_defaults(func=cmd_import, check=checks.check_import)

    p = with_data_dir(sub.add_parser("shell", help="IPython with the beamline profile"))
    p.add_argument("--epics", action="store_true", help="EPICS hardware instead of the simulation")
    p.add_argument("--beamline", metavar="FILE", help="a beamline configuration (YAML, or aps-2ide, sim-ioc): its "
                   "records as `beamline` in the shell; with a beam: section (aps-2ide), the plans' microprobe `mp` "
                   "on them (XFCT_BLUESKY_HARDWARE=beamline); with --epics and sim-ioc, the microprobe's prefix")
    p.set_defaults(func=cmd_shell)

    p = with_data_dir(sub.add_parser("paper-table", help="the founding paper's CC peak widths, simulated"))
    p.add_argument("--size", type=int, default=230, help="map side in pixels (300 nm), the paper's 230")
    p.add_argument("--region", type=int, default=96, help="central sub-region cross-correlated (px)")
    p.add_argument("--upsample", type=int, default=6, help="CC upsampling, the paper's 6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="folder for the table and figure (default <data dir>/paper)")
    p.add_argument("--no-store", action="store_true", help="do not store the maps in Tiled")
    p.set_defaults(func=cmd_paper_table, check=checks.check_paper_table)

    p = with_data_dir(sub.add_parser("dose-study", help="resolution at equal dose, few long to many short "
                                     "projections (at the defaults 15-20 min per seed on 2 cores)"))
    p.add_argument("--angles", default="24,72,240,720", help="projections of each schedule, comma-separated")
    p.add_argument("--total-dwell", type=float, default=0.72, help="dwell per pixel summed over the projections "
                   "(s), the same for every schedule: equal dose (0.72: the paper's 2.3e7 Gy, 240 x 3 ms)")
    p.add_argument("--size", type=int, default=128, help="field width, px of 300 nm")
    p.add_argument("--rows", type=int, default=16, help="rows compared")
    p.add_argument("--cell-diameter", type=float, default=25e-6, help="the cell, m (whole in the field)")
    p.add_argument("--alignments", default="auto,zn,none,truth", help="auto (DPC and every map), dpc, zn, none, "
                   "truth (the simulator's runout), comma-separated")
    p.add_argument("--algorithm", default="mlem", help="fbp, sirt, mlem or osem")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--seeds", default="0", help="seeds (noise and runout), comma-separated: e.g. 0,1,2")
    p.add_argument("--pipeline", default="simulator", help="simulator (driven directly) or bluesky (xfct_tomo "
                   "through a Session; slow)")
    p.add_argument("--output", help="folder for the tables and figure (default <data dir>/dose-study)")
    p.add_argument("--fit", action="store_true", help="take full spectra and reconstruct Zn from their fit "
                   "(default: the counts in Zn's energy window); slower")
    p.set_defaults(func=cmd_dose_study, check=checks.check_dose_study)

    from . import view
    from .ioc import add_arguments as add_ioc_arguments
    from .ioc import main_from_args as ioc_main

    p = with_data_dir(sub.add_parser("view", help="watch a scan from a browser (loopback, a token per start)",
                                     description=view.__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    view.add_arguments(p)
    p.set_defaults(func=view.main_from_args, check=view.check)

    from .beamline import check as beamline_check

    p = sub.add_parser("check", help="every PV of a beamline configuration, answering or not (nothing moves)")
    beamline_check.add_arguments(p)
    p.set_defaults(func=beamline_check.main_from_args)

    p = sub.add_parser("ioc", help="the microprobe's caproto IOC (simulated, loopback only by default)")
    add_ioc_arguments(p)  # its --data-dir is the folder of the HDF5 spectra (use <data dir>/assets)
    p.set_defaults(func=ioc_main)

    for name, func, check, helptext in (
            ("ls", cmd_ls, checks.check_ls, "recent runs"), ("show", cmd_show, None, "one run"),
            ("replay", cmd_replay, None, "store the runs kept in a backup folder into Tiled"),
            ("recover", cmd_recover, None, "store the runs of a dead acquisition (kill -9, power) from the journal"),
            ("fit", cmd_fit, checks.check_fit, "fit a stored run's spectra; store the fitted maps"),
            ("reconstruct", cmd_reconstruct, checks.check_reconstruct, "align, reconstruct, store the volumes")):
        p = with_data_dir(sub.add_parser(name, help=helptext))
        p.set_defaults(func=func, check=check)
        p.add_argument("--uri", help="a running Tiled server (default: open the data folder in-process); "
                       f"one that does not answer within {checks.CONNECT_TIMEOUT:g} s is reported")
        p.add_argument("--api-key", help="API key for --uri")
        if name == "ls":
            p.add_argument("-n", type=int, default=20, help="how many runs")
        elif name == "show":
            p.add_argument("uid", help="run uid (or a unique prefix)")
        elif name == "fit":
            p.add_argument("uid", help="uid (or unique prefix) of a run with full spectra (ours, or an imported MDA, "
                           "flyXRF, MAPS or PyXRF file)")
            p.add_argument("--elements", help="comma-separated line families to fit, e.g. Ca,Fe,Cu,Zn,Au_L (default: "
                           "the run's element maps, or the --calibration file's ELEMENTS_TO_FIT)")
            p.add_argument("--calibration", default="auto", help="auto (default: fitted on the summed spectra, from "
                           "the run's energy axis) or an XRF-Maps maps_fit_parameters_override.txt to start from")
            p.add_argument("--method", default="poisson", help="per-pixel fit: poisson (default: non-negative "
                           "Poisson maximum likelihood), linear or nnls")
            p.add_argument("--background", default="auto", help="poisson: each pixel's background held at its "
                           "share of the counts (held), fitted (free), or auto (default: held where a pixel cannot "
                           "determine it)")
        elif name == "reconstruct":
            p.add_argument("uid", help="uid (or unique prefix) of an xfct_tomo run or an imported tomography")
            p.add_argument("--algorithm", default="mlem", help="fbp, sirt, mlem (default) or osem")
            p.add_argument("--iterations", type=int, help="default 50 (sirt), 10 (mlem), 2 (osem)")
            p.add_argument("--subsets", type=int, default=1, help="OSEM ordered subsets (default 8 for osem)")
            p.add_argument("--align", default="auto", help="auto (default: method and channel chosen by the "
                           "data), dpc, zn or none")
            p.add_argument("--align-method", default="auto", choices=("auto", "pairwise", "matching"),
                           help="with --align auto: pairwise (fine angles), matching (sparse angles, wide "
                           "specimens) or auto (default)")
            p.add_argument("--channel", help="with --align auto: map to align on, e.g. fluorescence, "
                           "transmission, dpc_diag, Zn (default: the most informative)")
            p.add_argument("--elements", default="Zn", help="comma-separated, e.g. Zn,Fe,Cu (default Zn)")
            centre = p.add_mutually_exclusive_group()
            centre.add_argument("--center", type=float, help="rotation-axis column, pixel centres at integers "
                                "(scikit-image's convention; default: from the alignment)")
            centre.add_argument("--tomopy-center", type=float, help="the rotation axis as tomopy's center= gives "
                                "it (counted from the detector's edge: --center = this - 0.5)")
            p.add_argument("--refine", action="store_true",
                           help="refine the DPC alignment by projection matching (thick specimens seen whole)")
            p.add_argument("--dxchange", help="also write a DXchange HDF5 file here")
            p.add_argument("--scheduler", help="reconstruct on Dask: 'local' (a LocalCluster here) or a scheduler "
                           "address (tcp://host:8786); the workers read the run's maps from Tiled by row block")
        elif name == "recover":
            p.add_argument("directory", nargs="?", help="journal folder (default <data dir>/journal)")
        else:
            p.add_argument("directory", nargs="?", help="backup folder (default <data dir>/backup)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    from .storage import DataFolderError

    # in one line: a bad option, refused before anything is created (2); a data folder or a server unusable (1)
    try:
        checks.check_data_dir(args)
        if getattr(args, "check", None):
            args.check(args)
        return args.func(args)
    except (OptionError, DataFolderError, CommandError) as err:
        print(f"xfct-bluesky {args.command}: {err}", file=sys.stderr)
        return 2 if isinstance(err, OptionError) else 1
    except BrokenPipeError:  # `xfct-bluesky show UID | head`: the reader has gone; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)  # as the Python docs advise (signal module, SIGPIPE)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
