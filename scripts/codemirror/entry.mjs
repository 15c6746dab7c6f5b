// The parts of CodeMirror 6 the Containerfile editor uses (static/builds/editor.js), bundled once by
// scripts/vendor-static.sh with esbuild into static/vendor/codemirror/codemirror.min.js as window.PortalCodeMirror.
export {EditorState} from "@codemirror/state";
export {EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter, drawSelection} from "@codemirror/view";
export {defaultKeymap, history, historyKeymap} from "@codemirror/commands";
export {StreamLanguage, syntaxHighlighting, bracketMatching} from "@codemirror/language";
// Tokens as stable classes (tok-keyword, tok-string, ...), coloured by the page's CSS for the light and the dark theme.
export {classHighlighter} from "@lezer/highlight";
export {dockerFile} from "@codemirror/legacy-modes/mode/dockerfile";
export {lintGutter, setDiagnostics} from "@codemirror/lint";
export {search, searchKeymap} from "@codemirror/search";
