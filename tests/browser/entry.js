// The unmodified browser clients, exposed to the test page (tests/test_tus_browser.py,
// tests/test_direct_browser.py). The stylesheets are Uppy's own, for its Dashboard; esbuild
// writes them beside the bundle (tus-clients.css).
import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";
import AwsS3 from "@uppy/aws-s3";
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import Tus from "@uppy/tus";
import * as tus from "tus-js-client";

window.tus = tus;
window.Uppy = Uppy;
window.UppyTus = Tus;
window.UppyAwsS3 = AwsS3;
window.UppyDashboard = Dashboard;
