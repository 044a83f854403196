"""Plant known bugs one at a time and check that the test suite catches each.

    python tests/mutations.py              # every mutation, after a clean baseline run
    python tests/mutations.py --list       # the planted bugs
    python tests/mutations.py -k timeout   # only those whose name contains "timeout"
    python tests/mutations.py --check      # no tests: every replacement's text is still there, once


For each mutation the repository's tracked and untracked (not ignored) files are copied to
a temporary folder, one exact text replacement is made in one source file, and only the
tests named for that behaviour run there (pytest -x, a per-test timeout so a planted hang
fails instead of stalling). A mutation is *caught* when those tests fail, *survived* when
they pass. A replacement that no longer matches the source is reported as *stale* (the
list must follow the code). The baseline first runs the same tests on the unmodified copy:
they must pass, or a "caught" would mean nothing. Exit status 0 only when every mutation
is caught and the baseline passes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    old: str  # exact text, found exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the root


T_CLI = "tests/test_cli.py"
T_EVAL = "tests/test_evaluation.py"
T_ATTACKS = "tests/test_store_attacks.py"
T_REMOTE = "tests/test_export_remote.py"

MUTATIONS = [
    # -- the deliberate bugs of issue 12 --
    Mutation(
        "too-short boundary one frame late",
        "src/melset/track.py",
        "if len(y) < recipe.min_samples and",
        "if len(y) < recipe.min_samples + recipe.hop_length and",
        (f"{T_CLI}::test_too_short_boundary_is_exact_to_the_sample",),
    ),
    Mutation(
        "too-short boundary one frame early",
        "src/melset/track.py",
        "if len(y) < recipe.min_samples and",
        "if len(y) < recipe.min_samples - recipe.hop_length and",
        (f"{T_CLI}::test_too_short_boundary_is_exact_to_the_sample",),
    ),
    Mutation(
        "--whole-track averages one window (predict)",
        "src/melset/predict.py",
        "probs = run.probabilities(x).mean(axis=0)",
        "probs = run.probabilities(x[:1]).mean(axis=0)",
        (f"{T_EVAL}::test_whole_track_averages_every_window",),
    ),
    Mutation(
        "--whole-track cuts one window (track)",
        "src/melset/track.py",
        "n_windows = max(1, total // recipe.n_frames)",
        "n_windows = 1",
        (f"{T_EVAL}::test_whole_track_averages_every_window",),
    ),
    Mutation(
        "--retry-failed ignored",
        "src/melset/extract.py",
        "or (retry_failed and rec.status == FAILED)",
        "",
        (f"{T_CLI}::test_retry_failed_redoes_failed_rows_and_only_then",),
    ),
    Mutation(
        "--decoder ignored (command line)",
        "src/melset/cli/options.py",
        "if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)",
        "if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) and k != 'decoder'",
        (f"{T_CLI}::test_decoder_option_chooses_the_backend",),
    ),
    Mutation(
        "--decoder ignored (track)",
        "src/melset/track.py",
        "recipe.input_frames_needed, recipe.decoder)",
        'recipe.input_frames_needed, "auto")',
        (f"{T_CLI}::test_decoder_option_chooses_the_backend",),
    ),
    Mutation(
        "macro-F1 over all classes, absent ones included",
        "src/melset/evaluate.py",
        '"macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),',
        '"macro_f1": float(np.mean(f1)),',
        (
            f"{T_EVAL}::test_macro_f1_ignores_classes_absent_from_truth_and_prediction",
            f"{T_EVAL}::test_metrics_equal_scikit_learn",
        ),
    ),
    Mutation(
        "predict uses the default recipe",
        "src/melset/predict.py",
        "    recipe = run.recipe\n    out = []",
        "    recipe = Recipe()\n    out = []",
        (f"{T_EVAL}::test_predict_applies_the_runs_recipe_not_the_default",),
    ),
    Mutation(
        "--timeout ignored (command line)",
        "src/melset/cli/extract.py",
        "workers=workers, timeout=timeout,",
        "workers=workers,",
        (f"{T_CLI}::test_timeout_value_is_the_one_given",),
    ),
    Mutation(
        "--timeout ignored (local engine)",
        "src/melset/engines/local.py",
        "args=(path, recipe, row, sink), timeout=self.timeout)",
        "args=(path, recipe, row, sink), timeout=None)",
        (f"{T_CLI}::test_timeout_value_is_the_one_given",),
    ),
    # -- the other promises of issue 12 --
    Mutation(
        "evaluate accepts a store made with another recipe",
        "src/melset/evaluate.py",
        "    if diff:\n        raise RecipeError(",
        "    if False:\n        raise RecipeError(",
        (f"{T_EVAL}::test_evaluate_refuses_a_store_made_with_another_recipe",),
    ),
    Mutation(
        "train overwrites an existing run",
        "src/melset/runs.py",
        "if present and not overwrite:",
        "if False:",
        (f"{T_EVAL}::test_existing_run_folder_is_refused_unless_overwrite",),
    ),
    Mutation(
        "data printed as rich markup",
        "src/melset/cli/base.py",
        "            line.append(str(part))",
        "            line.append(Text.from_markup(str(part)))",
        (f"{T_CLI}::test_predict_without_a_run_and_with_odd_names", f"{T_CLI}::test_install_hint_prints_as_written"),
    ),
    Mutation(
        "--json prints NaN",
        "src/melset/system.py",
        "json.dumps(_finite_or_none(obj), indent=indent, allow_nan=False, default=str)",
        "json.dumps(obj, indent=indent, default=str)",
        (f"{T_EVAL}::test_strict_json_turns_nan_and_infinity_into_null",),
    ),
    Mutation(
        "a bug prints a traceback",
        "src/melset/cli/base.py",
        "        except Exception as exc:\n            try:\n                path = _save_traceback(exc)",
        "        except MemoryError as exc:\n            try:\n                path = _save_traceback(exc)",
        (f"{T_CLI}::test_unexpected_exception_is_a_bug_report_with_a_saved_traceback",),
    ),
    Mutation(
        "predict lets decoder noise through",
        "src/melset/predict.py",
        "            with silenced_stderr():",
        "            if True:",
        (f"{T_CLI}::test_predict_keeps_decoder_noise_off_the_terminal",),
    ),
    Mutation(
        "no refusal of a one-genre training split",
        "src/melset/train.py",
        "    if len(present) < 2:",
        "    if len(present) < 1:",
        (f"{T_EVAL}::test_thin_training_data_is_refused_or_warned_never_divided_by_zero",),
    ),
    Mutation(
        "patience 0 stops after the first epoch",
        "src/melset/train.py",
        "bool(self.since_best and self.since_best >= cfg.patience)",
        "bool(self.since_best >= cfg.patience)",
        (f"{T_CLI}::test_train_refuses_an_existing_run_and_thin_data",),
    ),
    Mutation(
        "training options not checked",
        "src/melset/train_config.py",
        "            if not isinstance(value, int) or value < 1:",
        "            if False:",
        (f"{T_CLI}::test_train_option_ranges",),
    ),
    # -- issue 23: a store's parts belong together --
    Mutation(
        "journal lines of another store accepted",
        "src/melset/store/format.py",
        "if owner is not None and d.get(STORE_ID_KEY) != owner:",
        "if False:",
        (f"{T_ATTACKS}::test_a_journal_and_matrices_copied_from_another_store_are_refused_then_rebuilt",),
    ),
    Mutation(
        "a killed store's track list not checked",
        "src/melset/store/checks.py",
        "if CATALOG_SHA in manifest and catalog_digest(table) != manifest[CATALOG_SHA]:",
        "if False:",
        (f"{T_ATTACKS}::test_an_edited_track_list_of_a_killed_store_is_refused_and_resume_rewrites_it",),
    ),
    Mutation(
        "repair seals an edited track list",
        "src/melset/store/repair.py",
        "and manifest.get(CATALOG_SHA, catalog_digest(base)) == catalog_digest(base)",
        "",
        (f"{T_ATTACKS}::test_repair_does_not_seal_an_edited_track_list",),
    ),
    Mutation(
        "names from data read as mathtext in pictures",
        "src/melset/plots.py",
        'PLAIN = {"parse_math": False}',
        "PLAIN = {}",
        ("tests/test_pictures.py::test_every_picture_draws_names_that_look_like_markup",),
    ),
    Mutation(
        "a FIFO named as --tracks is opened (and waits for ever)",
        "src/melset/system.py",
        "if not stat.S_ISREG(st.st_mode):",
        "if False:",
        ("tests/test_catalog.py::test_genres_csv_that_is_a_fifo_is_refused",),
    ),
    # -- issue 23: exact for every recipe the Recipe accepts --
    Mutation(
        "float32 STFT noise never sends a clip to float64",
        "src/melset/features.py",
        "_F1, _F2 = 4.0, 64.0",
        "_F1, _F2 = 0.0, 0.0",
        ("tests/test_exact_recipes.py::test_recipes_at_the_noise_floor_compute_what_librosa_computes",),
    ),
    Mutation(
        "an --amin float32 cannot hold is accepted",
        "src/melset/recipe.py",
        "    if not AMIN_RANGE[0] <= r.amin <= AMIN_RANGE[1]:",
        "    if False:",
        ("tests/test_exact_recipes.py::test_an_amin_float32_cannot_hold_is_refused_before_any_work",),
    ),
    # -- issue 23: a run is complete or it is not a run --
    Mutation(
        "an unfinished run is used as finished",
        "src/melset/predict.py",
        "    require_complete(run_dir)\n    config = read_config(run_dir)\n",
        "    config = read_config(run_dir)\n",
        ("tests/test_runs.py::test_an_unfinished_run_is_not_loaded_and_overwrite_replaces_it",),
    ),
    Mutation(
        "resume does not restore the random states",
        "src/melset/train.py",
        "        g.set_state(states[key])\n",
        "        pass\n",
        ("tests/test_runs.py::test_fit_resumed_from_any_epoch_ends_with_the_uninterrupted_weights",),
    ),
    Mutation(
        "SIGTERM during train says nothing",
        "src/melset/cli/train.py",
        "    previous = signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: the last finished epoch is kept\n",
        "    previous = signal.getsignal(signal.SIGTERM)\n",
        ("tests/test_runs.py::test_sigterm_and_ctrl_c_keep_the_last_epoch_and_say_how_to_resume",),
    ),
    Mutation(
        "a damaged config.json is not checked",
        "src/melset/runs.py",
        '"hyperparameters": ("a JSON object of melset train\'s options", lambda v: isinstance(v, dict)),',
        '"hyperparameters": ("a JSON object of melset train\'s options", lambda v: True),',
        ("tests/test_runs.py::test_damaged_run_files_are_one_sentence_for_predict_evaluate_report",),
    ),
    Mutation(
        "a damaged metrics.json is not checked",
        "src/melset/runs.py",
        '        _check_keys(path, f"epochs[{i}] ", epoch, _EPOCH_KEYS, ("epoch",))',
        "        pass",
        ("tests/test_runs.py::test_damaged_run_files_are_one_sentence_for_predict_evaluate_report",),
    ),
    # -- issue 23: outputs own only what they wrote --
    Mutation(
        "a re-export deletes what the earlier export did not write",
        "src/melset/exportdir.py",
        "    foreign = _foreign_entries(folder, marker)\n",
        "    foreign = []\n",
        ("tests/test_outputs.py::test_reexport_replaces_only_what_the_earlier_export_wrote",),
    ),
    Mutation(
        "an output inside a run is allowed",
        "src/melset/outputs.py",
        'if kind == "store" or (kind and runs):',
        'if kind == "store" and not runs:',
        ("tests/test_outputs.py::test_nothing_is_written_inside_a_store_or_a_run",),
    ),
    Mutation(
        "a picture replaces a file melset did not write",
        "src/melset/outputs.py",
        "    if not ours(real):\n",
        "    if False:\n",
        ("tests/test_outputs.py::test_picture_and_page_names",),
    ),
    Mutation(
        "a killed export's earlier export is not put back",
        "src/melset/exportdir.py",
        "            if not os.path.lexists(os.path.join(parent, target)):\n                os.rename(old, os.path.join(parent, target))\n",
        "            pass\n",
        ("tests/test_outputs.py::test_a_killed_exports_work_folder_is_cleaned_and_the_earlier_export_put_back",),
    ),
    Mutation(
        "SIGTERM during export leaves its work folder",
        "src/melset/cli/export.py",
        "    previous = signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: the work folder is removed\n",
        "    previous = signal.getsignal(signal.SIGTERM)\n",
        ("tests/test_outputs.py::test_export_stopped_at_random_moments_leaves_nothing_behind",),
    ),
    Mutation(
        "an export marker without a file list authorises deletion",
        "src/melset/exportdir.py",
        '    if not (isinstance(files, list) and isinstance(folders, list)):\n        raise untrusted("it lists no files: an export by an older melset")\n',
        "    files, folders = files or [], folders or []\n",
        ("tests/test_outputs.py::test_a_damaged_or_edited_marker_authorises_no_deletion",),
    ),
    # -- issue 24: a newcomer's first hour --
    Mutation(
        "tracks of other subsets on disk not counted",
        "src/melset/catalog/fma.py",
        "others = tracks[tracks[SUBSET_COL] > subset]",
        'others = tracks[tracks[SUBSET_COL] > "large"]',
        ("tests/test_first_hour.py::test_catalog_counts_tracks_of_other_subsets_on_disk",),
    ),
    Mutation(
        "the finished bar is grey in 16 colours",
        "src/melset/cli/extract.py",
        'BarColumn(finished_style="green")',
        "BarColumn()",
        ("tests/test_first_hour.py::test_terminal_bar_shows_the_summarys_rate_without_a_first_frame_spike_and_a_visible_finished_bar",),
    ),
    Mutation(
        "a log line for every row",
        "src/melset/cli/extract.py",
        "EVERY_S, AT_LEAST_S, STEP = 2.0, 30.0, 0.05",
        "EVERY_S, AT_LEAST_S, STEP = 0.0, 30.0, 0.0",
        ("tests/test_first_hour.py::test_log_lines_every_few_seconds_or_percent_and_at_least_every_30_seconds",),
    ),
    Mutation(
        "the summary's rate counts the set-up",
        "src/melset/extract.py",
        "return files_per_second(self.processed, self.work_s)",
        "return files_per_second(self.processed, self.elapsed_s)",
        ("tests/test_first_hour.py::test_the_progress_display_and_the_summary_compute_one_rate",),
    ),
    Mutation(
        "no progress in a log file",
        "src/melset/cli/extract.py",
        "display = Bar(meter) if err.is_terminal else LogLines(",
        "display = Bar(meter) if True else LogLines(",
        ("tests/test_first_hour.py::test_a_log_file_gains_progress_lines_while_extract_runs",),
    ),
    Mutation(
        "a changed --subset is refused without naming it",
        "src/melset/extract.py",
        "    _check_same_parameters(out, identity, catalog.source, overwrite)\n",
        "",
        ("tests/test_first_hour.py::test_another_subset_on_an_existing_store_is_refused_naming_subset_before_any_progress",),
    ),
    Mutation(
        "make demo installs the test tools, torch and Ray",
        "Makefile",
        "\t$(PIP) install --quiet -e .\n",
        "\t$(PIP) install --quiet -e '.[$(TEST_EXTRAS)]'\n",
        ("tests/test_first_hour.py::test_make_demo_installs_no_torch_ray_or_test_tools_and_says_how_to_run_melset",),
    ),
    Mutation(
        "a collection one level off is read",
        "src/melset/catalog/folders.py",
        'if len(tops) == 1 and all(r.count("/") >= 2 for r in rels):',
        "if False:",
        ("tests/test_catalog.py::test_a_collection_one_level_off_is_refused_with_the_audio_to_use",),
    ),
    # -- issue 23: one checked way to read a row --
    Mutation(
        "a row's checksum is not checked when read",
        "src/melset/store/reader.py",
        "            bad[j] = zlib.crc32(out[j]) != self._crcs[int(rows[j])]",
        "            bad[j] = False",
        ("tests/test_checked_reads.py::test_store_reads_refuse_a_damaged_row_or_leave_it_out_when_asked",),
    ),
    Mutation(
        "non-finite rows are read",
        "src/melset/store/reader.py",
        "        bad |= _not_finite(out.reshape(n, -1))",
        "        bad |= np.zeros(n, dtype=bool)",
        ("tests/test_checked_reads.py::test_store_reads_refuse_a_damaged_row_or_leave_it_out_when_asked",),
    ),
    Mutation(
        "the WebDataset export reads rows around the check",
        "src/melset/export.py",
        "                    for chunk, block in store.iter_rows(part):",
        "                    for chunk, block in [(part, store.mels[part])]:",
        ("tests/test_checked_reads.py::test_the_exports_library_calls_refuse_too",),
    ),
    Mutation(
        "MelDataset is not verified when opened",
        "src/melset/dataset.py",
        "        if verify:",
        "        if verify and False:",
        ("tests/test_checked_reads.py::test_dataset_never_serves_a_damaged_row",),
    ),
    Mutation(
        "a multi-label y.pickle keyed on genre_top",
        "src/melset/export.py",
        "            labelled = labels.any(axis=1)",
        "            labelled = np.array([isinstance(g, str) for g in store.tracks[GENRE_TOP].tolist()], dtype=bool)",
        ("tests/test_checked_reads.py::test_seed_pickles_of_a_multi_label_store_carry_the_multi_hot_rows",),
    ),
    Mutation(
        "evaluate reads rows unchecked",
        "src/melset/evaluate.py",
        "    parts = [run.probabilities(block) for _, block in store.iter_rows(rows, chunk_rows=32)]",
        "    parts = [run.probabilities(store.mels[rows[i : i + 32]]) for i in range(0, len(rows), 32)]",
        ("tests/test_checked_reads.py::test_evaluate_refuses_a_damaged_row",),
    ),
    Mutation(
        "repair misses a NaN row whose journal line was forged",
        "src/melset/store/checks.py",
        "                    or not_finite[j]\n",
        "",
        ("tests/test_checked_reads.py::test_repair_and_extract_heal_a_nan_row_whose_journal_line_was_forged",),
    ),
    Mutation(
        "log_mel does not resample",
        "src/melset/track.py",
        "        y = finish(y.astype(np.float32, copy=False), int(sr), recipe.sample_rate, reached_end=True)\n",
        "        y = y.astype(np.float32, copy=False)\n",
        ("tests/test_objects.py::test_log_mel_of_samples_in_memory_is_the_stored_row",),
    ),
    Mutation(
        "store[i] reads unchecked",
        "src/melset/store/reader.py",
        "        return self._record(row, self.row(row))\n",
        "        return self._record(row, np.asarray(self.mels[row]))\n",
        ("tests/test_objects.py::test_indexing_a_damaged_row_is_refused_in_words",),
    ),
    Mutation(
        "a negative store index is not counted from the end",
        "src/melset/store/reader.py",
        "        row = int(index) + n if index < 0 else int(index)\n",
        "        row = int(index)\n",
        ("tests/test_objects.py::test_a_store_says_what_it_holds_and_is_indexed_like_a_dataset",),
    ),
    Mutation(
        "show suggests no FMA id",
        "src/melset/cli/store.py",
        "        hits = [t for t in ids if t == key]\n",
        "        hits = []\n",
        ("tests/test_objects.py::test_show_an_unknown_track_suggests_the_ids_it_holds",),
    ),
    Mutation(
        "a store passed as a run is not named a store",
        "src/melset/runs.py",
        "    if os.path.exists(os.path.join(run_dir, MANIFEST)):\n",
        "    if False:\n",
        ("tests/test_objects.py::test_a_store_given_for_a_run_is_named_a_store",),
    ),
    Mutation(
        "a missing folder is called 'not a melset store'",
        "src/melset/store/checks.py",
        "        if not os.path.lexists(root):\n",
        "        if False:\n",
        ("tests/test_objects.py::test_info_of_a_folder_that_does_not_exist_says_so",),
    ),
    Mutation(
        "exports carry the machine's absolute paths",
        "src/melset/export.py",
        "        PATH: relative_path(str(t[PATH].iat[row]), source_root(store)),",
        "        PATH: str(t[PATH].iat[row]),",
        ("tests/test_portable.py::test_exports_store_relative_paths_and_a_dataset_card",),
    ),
    Mutation(
        "one WebDataset shard for a small split",
        "src/melset/export.py",
        "min(len(rows), MIN_SHARDS)))",
        "1))",
        ("tests/test_portable.py::test_a_dataloader_with_two_workers_reads_every_sample_once",),
    ),
    Mutation(
        "no dataset card in a WebDataset export",
        "src/melset/export.py",
        "        write_card(work, store, WEBDATASET, counts, wds_loader(to))\n",
        "",
        ("tests/test_portable.py::test_exports_store_relative_paths_and_a_dataset_card",),
    ),
    Mutation(
        "train prints no line per epoch",
        "src/melset/cli/train.py",
        "        if not quiet:\n            progress.epoch(row)",
        "        pass",
        ("tests/test_portable.py::test_train_prints_a_line_per_epoch_into_a_log_file",),
    ),
    Mutation(
        "a FIFO in place of a store file is read",
        "src/melset/store/format.py",
        "    if not stat.S_ISREG(st.st_mode):\n        os.close(fd)",
        "    if False:\n        os.close(fd)",
        (f"{T_ATTACKS}::test_a_fifo_or_a_device_in_place_of_a_store_file_is_refused_not_read",),
    ),
    Mutation(
        "a hidden folder becomes a class",
        "src/melset/catalog/table.py",
        'dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))',
        "dirnames.sort()",
        ("tests/test_catalog.py::test_hidden_names_are_skipped_and_unlabelled_or_clashing_labels_are_named",),
    ),
    Mutation(
        "a user's matplotlib figure counts as melset's",
        "src/melset/plots.py",
        'return software is not None and software.startswith(_MARKS["png"][1])',
        "return software is not None",
        ("tests/test_output_attacks.py::test_a_users_own_matplotlib_figure_is_never_replaced",),
    ),
    Mutation(
        "an edited export record is trusted",
        "src/melset/exportdir.py",
        "marker.get(CHECKSUM) != _manifest_digest(marker)",
        "False",
        ("tests/test_output_attacks.py::test_an_edited_export_record_authorises_no_deletion",),
    ),
    Mutation(
        "a folder named like a work folder is deleted",
        "src/melset/exportdir.py",
        'if record.get("folder") != name or record.get("pid") != pid',
        'if record.get("pid") == -1',
        ("tests/test_output_attacks.py::test_a_folder_named_like_a_work_folder_is_not_deleted",),
    ),
    Mutation(
        "a picture is written through a symbolic link",
        "src/melset/outputs.py",
        "    if os.path.islink(given):",
        "    if False:",
        ("tests/test_output_attacks.py::test_a_symbolic_link_at_the_output_is_refused",),
    ),
    Mutation(
        "a user's own files named like a run's are overwritten",
        'src/melset/runs.py',
        '        if ours and not others and not _holds_melset_run(run_dir):',
        '        if False:',
        ("tests/test_run_attacks.py::test_overwrite_keeps_a_users_own_files_named_like_a_runs",),
    ),
    Mutation(
        'non-finite weights are loaded',
        'src/melset/predict.py',
        '    if not all_finite(state):',
        '    if False:',
        ("tests/test_run_attacks.py::test_nan_weights_in_a_finished_run_are_refused",),
    ),
    Mutation(
        'a damaged checkpoint is resumed',
        'src/melset/train.py',
        '    if digest != _tensor_digest(checkpoint) or not all_finite(checkpoint):',
        '    if False:',
        ("tests/test_run_attacks.py::test_a_damaged_checkpoint_is_not_resumed",),
    ),
    Mutation(
        'a config.json whose classes were edited is used',
        'src/melset/runs.py',
        '    if recorded is not None and recorded != config["classes"]:',
        '    if False:',
        ("tests/test_run_attacks.py::test_a_hand_edited_config_is_refused",),
    ),
    Mutation(
        'metrics.json with duplicate epochs is read',
        'src/melset/runs.py',
        '        if epoch["epoch"] != i + 1:',
        '        if False:',
        ("tests/test_run_attacks.py::test_metrics_that_are_not_a_runs_record_are_refused",),
    ),
    Mutation(
        'an input too small for the model crashes training',
        'src/melset/train.py',
        '    check_input_size(cfg, store.recipe, len(store.classes))',
        '    pass',
        ("tests/test_run_attacks.py::test_an_input_too_small_leaves_no_run_folder",),
    ),
    Mutation(
        'a full disk during train is a traceback',
        'src/melset/runs.py',
        '            raise cannot_write(path, exc) from None',
        '            raise',
        ("tests/test_run_attacks.py::test_a_full_disk_is_one_sentence_that_says_how_to_resume",),
    ),
    Mutation("the URL export copies no file into place", "src/melset/exportdir.py",
        '            for f in files:\n                remote.copy(f"{work}/{f}", f)\n', '',
        (f"{T_REMOTE}::test_hf_export_to_s3_loads_with_the_rows_of_a_local_one",)),
    Mutation("a re-export to a URL leaves the earlier export's other files", "src/melset/exportdir.py",
        '            remote.remove(sorted(set(now["old"]) - set(files)))\n', '',
        (f"{T_REMOTE}::test_webdataset_and_seed_pickles_to_s3_read_back_and_a_reexport_replaces_only_its_own",)),
    Mutation("objects in a URL target that no record lists are replaced", "src/melset/exportdir.py",
        '        and rel not in known\n', '        and rel not in known and False\n',
        (f"{T_REMOTE}::test_a_target_holding_objects_melset_did_not_write_is_refused",)),
    Mutation("a work prefix without its record counts as melset's", "src/melset/exportdir.py",
        '    ours = (own, *leftovers)\n', '    ours = (own, *leftovers, *work_names(objects))\n',
        (f"{T_REMOTE}::test_a_target_holding_objects_melset_did_not_write_is_refused",)),
    Mutation("a killed upload's work record authorises nothing", "src/melset/exportdir.py",
        '                known.update(record[PLACING], record.get(REPLACING) or [])\n', '                pass\n',
        (f"{T_REMOTE}::test_an_upload_killed_mid_swap_is_finished_by_the_next_export",)),
    Mutation("a killed upload's work prefix is left behind", "src/melset/exportdir.py",
        '            for name in now["leftovers"]:\n                remove_work(remote, name, now["objects"])\n', '',
        (f"{T_REMOTE}::test_an_upload_killed_mid_swap_is_finished_by_the_next_export",)),
    Mutation("the URL export's record is written before its files", "src/melset/exportdir.py",
        '            if MARKER in now["objects"]:\n                remote.remove([MARKER])\n',
        '            remote.put_file(os.path.join(local, MARKER), MARKER)\n',
        (f"{T_REMOTE}::test_an_upload_killed_mid_swap_is_finished_by_the_next_export",)),
    Mutation("SIGTERM mid-upload leaves the work prefix", "src/melset/exportdir.py",
        '                remove_work(remote, work, [f"{work}/{f}" for f in files] + [f"{work}/{UPLOAD_RECORD}"])\n',
        '                pass\n',
        (f"{T_REMOTE}::test_sigterm_mid_upload_leaves_the_earlier_export_and_no_work_prefix",)),
    Mutation("a missing bucket is not told as one", "src/melset/location/upload.py",
        '        except FileNotFoundError:  # find()', '        except KeyError:  # find()',
        (f"{T_REMOTE}::test_storage_failures_are_one_sentence",)),
    Mutation("the storage's listing errors escape as tracebacks", "src/melset/location/upload.py",
        '        except Exception as exc:\n            raise MetadataError(f"{self.url}: listing it:',
        '        except ValueError as exc:\n            raise MetadataError(f"{self.url}: listing it:',
        (f"{T_REMOTE}::test_storage_failures_are_one_sentence",)),
    Mutation("access denied is not told as one", "src/melset/location/upload.py",
        '            raise MetadataError(f"{self.url}: listing it: {explain(exc, self.url)}") from None',
        '            raise MetadataError(f"{self.url}: listing it: {exc!r}") from None',
        (f"{T_REMOTE}::test_access_denied_is_a_sentence",)),
    Mutation("--storage-option is not passed to the hf export", "src/melset/cli/export.py",
        "exports.hf(store, to, options)", "exports.hf(store, to)",
        (f"{T_REMOTE}::test_hf_export_to_s3_loads_with_the_rows_of_a_local_one",)),
    Mutation("the card of a URL export names a folder", "src/melset/card.py",
        '    if isinstance(to, str) and "://" in to:\n        return to.rstrip("/")\n', '',
        (f"{T_REMOTE}::test_hf_export_to_s3_loads_with_the_rows_of_a_local_one",)),
    Mutation("a URL --to is written as a local folder", "src/melset/exportdir.py",
        "    if is_url(os.fspath(to)):\n        with _remote_export(", "    if False:\n        with _remote_export(",
        (f"{T_REMOTE}::test_hf_export_to_s3_loads_with_the_rows_of_a_local_one",)),
    Mutation(
        "a worker's sink creates and writes mels.npy wherever the store's path leads",
        "src/melset/store/sink.py",
        '        try:\n            with open(os.path.join(os.path.dirname(self.path), STORE_ID), encoding="ascii") as f:',
        '        return os.open(self.path, os.O_WRONLY | os.O_CREAT)\n        try:\n            with open(os.path.join(os.path.dirname(self.path), STORE_ID), encoding="ascii") as f:',
        ("tests/test_ray_remote.py::test_sink_elsewhere_raises_unreachable_and_creates_nothing",),
    ),
    Mutation(
        "a worker that cannot reach the store fails the task instead of sending the matrix back",
        "src/melset/engines/worker.py",
        "    except SinkUnreachable:  # e.g. a Ray node without the shared store: the driver writes it",
        "    except FileNotFoundError:  # e.g. a Ray node without the shared store: the driver writes it",
        ("tests/test_ray_remote.py::test_worker_node_without_the_driver_paths_gives_the_local_bytes",),
    ),
    Mutation(
        "the sink writes into a copy of the store that has the driver's .store_id",
        "src/melset/store/sink.py",
        "or (self.ino and st.st_ino != self.ino)",
        "or (self.ino and st.st_ino != st.st_ino)",
        ("tests/test_ray_remote.py::test_sink_elsewhere_raises_unreachable_and_creates_nothing",),
    ),
    # -- audio where it lives (issue 25) --
    Mutation(
        "a checksum mismatch is decoded anyway",
        "src/melset/track.py",
        "        if problem:\n            return TrackResult.failed(problem)",
        "        if False:\n            return TrackResult.failed(problem)",
        ("tests/test_locations.py::test_a_flipped_bit_in_a_member_fails_with_the_checksum_named",
         "tests/test_locations.py::test_checksums_name_a_corrupt_local_file_too"),
    ),
    Mutation(
        "a local file listed in --checksums is decoded in place, unchecked",
        "src/melset/catalog/table.py",
        "        if local and sha1 is None:",
        "        if local:",
        ("tests/test_locations.py::test_checksums_name_a_corrupt_local_file_too",),
    ),
    Mutation(
        "an archive's top folder is not its root",
        "src/melset/location/archive.py",
        "    if len(tops) == 1 and all(\"/\" in n for n in names):",
        "    if False:",
        ("tests/test_locations.py::test_places_and_locators",),
    ),
    Mutation(
        "the track identity keeps the archive's locator",
        "src/melset/extract.py",
        "        values[PATH] = catalog.relative(values[PATH]) or values[PATH]",
        "        pass",
        ("tests/test_locations.py::test_a_run_resumes_whether_the_audio_was_zipped_or_unpacked",),
    ),
    Mutation(
        "a large object is read whole",
        "src/melset/location/__init__.py",
        "            and self.size > WHOLE_BELOW",
        "            and self.size > 10**15",
        ("tests/test_locations.py::test_a_long_object_is_read_by_ranges_to_the_same_matrix",),
    ),
    Mutation(
        "a range request that fails mid-decode is stored as a short file",
        "src/melset/track.py",
        "        return _fetch_failed(path) or TrackResult.failed(str(exc))",
        "        return TrackResult.failed(str(exc))",
        ("tests/test_locations.py::test_a_range_request_that_fails_is_named",),
    ),
    Mutation(
        "objects at URLs are not read ahead",
        "src/melset/engines/local.py",
        "        tasks = prefetched(tasks, 4 * self.workers)",
        "        pass",
        ("tests/test_locations.py::test_objects_at_urls_are_read_ahead_by_the_driver",),
    ),
    Mutation(
        "a file the driver could not find ahead is read again as empty",
        "src/melset/track.py",
        "        if item.problem == MISSING_MARK:",
        "        if False:",
        ("tests/test_locations.py::test_objects_at_urls_are_read_ahead_by_the_driver",),
    ),
    Mutation(
        "a read-ahead from storage that stopped answering stalls the run",
        "src/melset/location/__init__.py",
        "                payload = slot.get(timeout=wait_s)",
        "                payload = slot.get()",
        ("tests/test_locations.py::test_a_read_ahead_that_does_not_end_is_left_to_the_worker",),
    ),
    Mutation(
        "an encrypted zip member is an internal error",
        "src/melset/location/archive.py",
        "    if info.flag_bits & 0x1:",
        "    if False:",
        ("tests/test_locations.py::test_an_encrypted_or_symlinked_member_is_a_failed_row_with_its_reason",),
    ),
    Mutation(
        "two members of one name: the last one is read",
        "src/melset/location/archive.py",
        "    if twice is not None:",
        "    if False:",
        ("tests/test_locations.py::test_an_archive_that_cannot_be_used_as_it_is_is_one_sentence",),
    ),
    Mutation(
        "a zip of absolute or '..' member names reads as all missing",
        "src/melset/location/archive.py",
        "    if unsafe is not None:",
        "    if False:",
        ("tests/test_locations.py::test_an_archive_that_cannot_be_used_as_it_is_is_one_sentence",),
    ),
    Mutation(
        "--checksums listing none of the files checks nothing, silently",
        "src/melset/catalog/__init__.py",
        "        if checksums is not None and listed == 0:",
        "        if False:",
        ("tests/test_locations.py::test_checksums_that_list_none_of_the_files_or_a_file_twice_are_refused",),
    ),
    Mutation(
        "a changed object is resumed into a mix",
        "src/melset/extract.py",
        "    _check_same_objects(out, catalog.source, overwrite)",
        "    pass",
        ("tests/test_locations.py::test_an_archive_that_changed_is_not_resumed_into_a_mix",
         "tests/test_locations.py::test_a_changed_object_is_noticed_on_resume"),
    ),
    Mutation(
        "an endpoint that does not answer is a traceback",
        "src/melset/location/remote.py",
        "    except Exception as exc:\n        raise MetadataError(f\"{option} {url}: {explain(exc, url)}\") from None",
        "    except FileExistsError as exc:\n        raise MetadataError(f\"{option} {url}: {explain(exc, url)}\") from None",
        ("tests/test_locations.py::test_storage_failures_are_one_sentence_before_work",),
    ),
    Mutation(
        "a zip member is decoded as a file named like the archive",
        "src/melset/track.py",
        "    name = item.locator.split(\"::\", 1)[0]  # a member: its own name, for its extension",
        "    name = item.locator",
        ("tests/test_locations.py::test_fma_zips_in_place_give_the_unpacked_store",),
    ),
]


def copy_repo(dst: Path) -> None:
    """The working tree as git sees it: tracked files and untracked ones that are not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)


def run_tests(repo: Path, tests: tuple[str, ...], per_test_timeout: int) -> tuple[int, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), *filter(None, [env.get("PYTHONPATH", "")])])
    env.setdefault("MELSET_SHARED", str(ROOT.parent / "shared"))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--timeout={per_test_timeout}",
        *tests,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, tail[-1] if tail else "", time.perf_counter() - start


def stale(mutations: list[Mutation]) -> list[tuple[str, str]]:
    """What no longer matches the code: a replacement whose text is not found exactly once in
    its file, or a test it names that does not exist. A move that disarms a planted bug shows here."""
    problems = []
    for m in mutations:
        path = ROOT / m.file
        found = path.read_text().count(m.old) if path.is_file() else None
        if found != 1:
            where = f"{m.file} does not exist" if found is None else f"found {found} times in {m.file}"
            problems.append((m.name, f"the text to replace is {where}"))
        if m.new == m.old:
            problems.append((m.name, "the replacement changes nothing"))
        for test in m.tests:
            file, _, name = test.partition("::")
            test_path = ROOT / file
            if not test_path.is_file():
                problems.append((m.name, f"{file} does not exist"))
            elif name and f"def {name.split('[')[0]}(" not in test_path.read_text():
                problems.append((m.name, f"{file} has no test {name}"))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="only", default="", help="only mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--check", action="store_true", help="only check that every mutation still applies (no tests)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the clean run of the selected tests")
    parser.add_argument("--timeout", type=int, default=120, help="per-test timeout in seconds (default 120)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.file}: {m.old!r} -> {m.new!r}; tests: {' '.join(m.tests)}")
        return 0
    if args.check:
        problems = stale(chosen)
        for name, problem in problems:
            print(f"STALE {name}: {problem}")
        print(f"{len(chosen) - len({name for name, _ in problems})} of {len(chosen)} planted bugs apply")
        return 1 if problems else 0
    ok = True
    with tempfile.TemporaryDirectory(prefix="melset-mutations-") as tmp:
        if not args.no_baseline:
            clean = Path(tmp) / "baseline"
            copy_repo(clean)
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, last, seconds = run_tests(clean, tests, args.timeout)
            print(f"baseline (no mutation, {len(tests)} test selections): {'passed' if code == 0 else 'FAILED'}"
                  f" in {seconds:.0f} s: {last}")  # fmt: skip
            if code != 0:
                return 1
        rows = []
        for i, m in enumerate(chosen):
            repo = Path(tmp) / f"m{i}"
            copy_repo(repo)
            path = repo / m.file
            text = path.read_text()
            if text.count(m.old) != 1:
                rows.append(
                    (m.name, "STALE", f"the text to replace is found {text.count(m.old)} times in {m.file}", 0.0)
                )
                ok = False
                continue
            path.write_text(text.replace(m.old, m.new))
            code, last, seconds = run_tests(repo, m.tests, args.timeout)
            if code == 1:
                verdict = "caught"
            elif code == 0:
                verdict, ok = "SURVIVED", False
            else:
                verdict, ok = f"ERROR (pytest exit {code})", False
            rows.append((m.name, verdict, last, seconds))
            shutil.rmtree(repo, ignore_errors=True)
            print(f"{m.name:<52} {verdict:<9} {seconds:6.0f} s  {last}", flush=True)
    caught = sum(r[1] == "caught" for r in rows)
    print(f"{caught} of {len(rows)} planted bugs caught")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
