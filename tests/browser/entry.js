// The unmodified browser clients, exposed to the test page (tests/test_tus_browser.py).
import Uppy from "@uppy/core";
import Tus from "@uppy/tus";
import * as tus from "tus-js-client";

window.tus = tus;
window.Uppy = Uppy;
window.UppyTus = Tus;
