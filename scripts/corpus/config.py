"""Which packages, languages and limits the corpus is built from."""

from __future__ import annotations

# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

CORPUS_LANGS = ("en", "fr", "de", "es", "ru", "hi")
PAIR_LANGS = ("fr", "de", "es", "ru", "hi")
LOWRES_LANG = "ne"

HANDBOOK_PKG = "debian-handbook"
HANDBOOK_DIRS = {"en": "en-US", "fr": "fr-FR", "de": "de-DE", "es": "es-ES", "ru": "ru-RU"}

LOHELP_PKGS = {
    "en": "libreoffice-help-en-us",
    **{lang: f"libreoffice-help-{lang}" for lang in PAIR_LANGS},
}
LOHELP_DIRS = {"en": "en-US", **{lang: lang for lang in PAIR_LANGS}}

LO_L10N_PKGS = {lang: f"libreoffice-l10n-{lang}" for lang in PAIR_LANGS + (LOWRES_LANG,)}

# Packages whose gettext catalogs (usr/share/locale/XX/LC_MESSAGES/*.mo) are used for
# every language they cover.  Chosen because they carry sizeable Hindi and Nepali
# catalogs (Hindi is the scarcest corpus language) as well as the big European ones;
# country/city-name catalogs (iso-codes, libgweather) are left out because they are
# lists of names, not sentences.
GETTEXT_PKGS = (
    "inkscape",
    "evolution-common",
    "brasero-common",
    "gnote",
    "hexchat-common",
    "libgtksourceview-4-common",
    "network-manager-gnome",
    "gnome-settings-daemon-common",
    "gvfs-common",
    "gnome-software-common",
    "gnome-panel-data",
    "gnome-applets-data",
    "mutter-common",
    "gnome-calculator",
    "libgtk-3-common",
    "libgtk2.0-common",
    "libglib2.0-data",
    "gsettings-desktop-schemas",
    "libgdk-pixbuf2.0-common",
    "at-spi2-common",
    "gnome-control-center-data",
    "gnome-shell-common",
    "gnome-terminal-data",
    "gnome-disk-utility",
    "gnome-system-monitor",
    "nautilus-data",
    "gedit-common",
    "evince-common",
    "eog",
    "file-roller",
    "seahorse",
    "evolution-data-server-common",
    "rhythmbox-data",
    "totem-common",
    "cheese-common",
    "pidgin-data",
    "gimp-data",
    "gnumeric-common",
    "aisleriot",
    "synaptic",
    "dpkg",
    "apt",
    "libapt-pkg6.0",
    "login",
)

DICT_PKGS = {
    "fr": "dict-freedict-eng-fra",
    "de": "dict-freedict-eng-deu",
    "es": "dict-freedict-eng-spa",
    "ru": "dict-freedict-eng-rus",
    "hi": "dict-freedict-eng-hin",
}

LO_APPS = {
    "swriter": "writer",
    "scalc": "calc",
    "simpress": "impress",
    "sdraw": "draw",
    "smath": "math",
    "sbasic": "basic",
    "sdatabase": "base",
    "schart": "chart",
}

MAX_CHARS = 1000
SHORT_TEMPLATE_WORDS = 8  # pairs/lines up to this many words are deduplicated by template
