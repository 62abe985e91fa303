// The unmodified browser clients, exposed to the test page (tests/test_tus_browser.py,
// tests/test_direct_browser.py).
import AwsS3 from "@uppy/aws-s3";
import Uppy from "@uppy/core";
import Tus from "@uppy/tus";
import * as tus from "tus-js-client";

window.tus = tus;
window.Uppy = Uppy;
window.UppyTus = Tus;
window.UppyAwsS3 = AwsS3;
