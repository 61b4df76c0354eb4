"""Two ways people bring images to the page of `srfeat serve` besides dropping files and the file chooser: pasting
one (Ctrl+V: a screenshot, "Copy image" in a browser) and dropping a whole folder from the file manager. Helpers
and the browser come from test_web.py."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, Page, expect
from test_web import (
    Server,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    job_card,
    open_tab,
    png_bytes,
    start_server,
    stop_server,
)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server()
    yield started
    stop_server(started)


def _zip_names(page: Page) -> list[str]:
    with page.expect_download() as download:
        page.click("#download-all")
    with zipfile.ZipFile(download.value.path()) as archive:
        return archive.namelist()


def _download_name(page: Page, name: str) -> str:
    with page.expect_download() as download:
        job_card(page, name).get_by_role("link").click()
    return download.value.suggested_filename


# A paste as the browser sends it for Ctrl+V, with what the clipboard holds: files made in the page (an image as a
# screenshot comes: named "image.png"), or text. `target` is a selector.
PASTE = """([target, files, text]) => {
    const transfer = new DataTransfer();
    for (const [name, type, bytes] of files) transfer.items.add(new File([new Uint8Array(bytes)], name, { type }));
    if (text) transfer.setData("text/plain", text);
    const event = new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
    document.querySelector(target).dispatchEvent(event);
    return event.defaultPrevented;
}"""


def _paste(page: Page, target: str, files: Sequence[tuple[str, str, bytes]] = (), text: str = "") -> bool:
    return page.evaluate(PASTE, [target, [[name, kind, list(data)] for name, kind, data in files], text])


def test_a_pasted_image_is_uploaded_under_a_name_of_its_own(server: Server, browser: Browser) -> None:
    """Ctrl+V with a screenshot on the clipboard did nothing: only a drop or the file chooser took an image. Pasted
    images come named "image.png": each is named pasted-N, so that their results and the zip's entries differ."""
    tab = open_tab(browser, server)
    page = tab.page
    # A real Ctrl+V, with an image written to the clipboard ("Copy image" in a browser).
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url.rstrip("/"))
    page.evaluate(
        """async (bytes) => {
            const blob = new Blob([new Uint8Array(bytes)], { type: "image/png" });
            await navigator.clipboard.write([new ClipboardItem({ "image/png": blob })]);
        }""",
        list(png_bytes(16)),
    )
    page.click("h1")
    page.keyboard.press("Control+V")
    expect(job_card(page, "pasted-1.png")).to_have_attribute("data-state", "done", timeout=60_000)
    # Two more at once, one a JPEG: each its own name, in the clipboard's format.
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(16))).save(jpeg, format="JPEG")
    assert _paste(
        page, "body", [("image.png", "image/png", png_bytes(12)), ("image.jpg", "image/jpeg", jpeg.getvalue())]
    )
    for name in ("pasted-2.png", "pasted-3.jpg"):
        expect(job_card(page, name)).to_have_attribute("data-state", "done", timeout=60_000)
    assert _download_name(page, "pasted-1.png") == "pasted-1_x4.png"
    assert sorted(_zip_names(page)) == ["pasted-1_x4.png", "pasted-2_x4.png", "pasted-3_x4.jpg"]
    # Text pasted on the page is no image: a short note says what is taken, and nothing is uploaded.
    assert not _paste(page, "body", text="some words")
    expect(page.locator("#note")).to_have_text(
        "What was pasted is text, not an image: copy an image or take a screenshot, then paste it here"
    )
    # Pasted into a text field, text is the field's (not taken, nor noted), and so is an image pasted there.
    page.evaluate("() => document.body.append(Object.assign(document.createElement('input'), { id: 'typed' }))")
    page.fill("#typed", "")
    page.evaluate("() => document.getElementById('note').hidden = true")
    assert not _paste(page, "#typed", text="typed words")
    assert not _paste(page, "#typed", [("image.png", "image/png", png_bytes(16))])
    page.focus("#typed")
    page.keyboard.insert_text("still types")
    expect(page.locator("#typed")).to_have_value("still types")
    expect(page.locator("#note")).to_be_hidden()
    expect(page.locator("#jobs li")).to_have_count(3)
    assert tab.console_errors == []
    page.context.close()


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)


def _drop_from_file_manager(page: Page, paths: list[Path]) -> None:
    """Files or folders dragged from the file manager onto the page, as the browser sends them (the DevTools
    protocol's drag carries real paths; Playwright cannot drag from outside the page)."""
    devtools = page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(path) for path in paths], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        devtools.send("Input.dispatchDragEvent", {"type": kind, "x": 900, "y": 300, "data": data})


def test_a_dropped_folder_adds_the_images_in_it_every_level_down(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """A folder dropped from the file manager was one card saying it could not be read. Now its images are added,
    from its folders too, and what is no image by its name is skipped with one note; two images of one name in
    different folders (a/x.png, b/x.png) are named by their paths, so that cards, downloads and zip tell them apart."""
    image = png_bytes(16)
    _tree(
        tmp_path / "holiday",
        {
            "a/x.png": image,
            "b/x.png": image,
            "b/deep/er/y.png": image,
            "notes.txt": b"words",
            "clip.mov": b"\0",
            ".DS_Store": b"\0",
            ".git/HEAD": b"ref",
        },
    )
    _tree(tmp_path, {"loose.png": image})
    tab = open_tab(browser, server)
    page = tab.page
    _drop_from_file_manager(page, [tmp_path / "holiday", tmp_path / "loose.png"])
    expected = ("holiday_a_x.png", "holiday_b_x.png", "y.png", "loose.png")
    for name in expected:
        expect(job_card(page, name)).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.locator("#jobs li")).to_have_count(len(expected))
    expect(page.locator("#note")).to_have_text(
        "2 files in the folder were skipped, as their names say they are no image (clip.mov, notes.txt)"
    )
    assert _download_name(page, "holiday_b_x.png") == "holiday_b_x_x4.png"
    names = _zip_names(page)
    assert sorted(names) == sorted(["holiday_a_x_x4.png", "holiday_b_x_x4.png", "y_x4.png", "loose_x4.png"])
    assert tab.console_errors == []
    page.context.close()


def test_a_folder_can_be_chosen_as_well(server: Server, browser: Browser, tmp_path: Path) -> None:
    """ "choose a folder" takes a folder as a drop of it does: its images, named apart where their names meet."""
    image = png_bytes(16)
    _tree(tmp_path / "scans", {"one/p.png": image, "two/P.png": image, "readme.md": b"#", ".hidden/z.png": image})
    page = open_tab(browser, server).page
    page.set_input_files("#folder", tmp_path / "scans")
    for name in ("scans_one_p.png", "scans_two_P.png"):
        expect(job_card(page, name)).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.locator("#jobs li")).to_have_count(2)
    expect(page.locator("#note")).to_have_text(
        "1 file in the folder was skipped, as its name says it is no image (readme.md)"
    )
    assert sorted(_zip_names(page)) == ["scans_one_p_x4.png", "scans_two_P_x4.png"]
    page.context.close()


# A folder's entry as the browser makes it, built in the page: its reader hands `batch` entries at a time, as
# Chromium's hands 100, until an empty batch.
FAKE_FOLDER = """([name, count, batch, bytes]) => {
    const file = (fileName) => ({ isFile: true, isDirectory: false, name: fileName,
        file: (resolve) => resolve(new File([new Uint8Array(bytes)], fileName, { type: "image/png" })) });
    const children = Array.from({ length: count }, (_, index) => file(`shot ${index + 1}.png`));
    const folder = { isFile: false, isDirectory: true, name, createReader: () => {
        let read = 0;
        return { readEntries: (resolve) => setTimeout(() => resolve(children.slice(read, (read += batch)))) };
    } };
    dropped({ items: [{ kind: "file", webkitGetAsEntry: () => folder, getAsFile: () => null }], files: [],
        getData: () => "" });
}"""


def test_every_batch_of_a_large_folder_is_read(server: Server, browser: Browser) -> None:
    """A folder reader hands its entries in batches: only the first read would lose all past the 100th."""
    page = open_tab(browser, server).page
    page.evaluate(FAKE_FOLDER, ["many", 7, 3, list(png_bytes(8))])
    expect(page.locator("#jobs li")).to_have_count(7)
    for index in range(1, 8):
        expect(job_card(page, f"shot {index}.png")).to_have_count(1)
    page.context.close()
