"""
Poor Man's Configurator, after nanoGPT. A script defines its config as plain globals, then runs
    exec(open(os.path.join(ROOT, 'configurator.py')).read())
(by its path in the repo, so scripts run from any directory) which reads sys.argv: first any config
files (plain Python assignments, e.g. config/toy.py, found from the current directory, else in the
repo), then --key=value overrides, e.g.
$ python train.py config/toy.py --batch_size=32 --compile=False
Values are literal-evaluated (a str key also takes a bare word; a bool key alone, --compile, means
True) and must keep the default's type;
an int is accepted for a float key. An unknown key, a wrong type or a missing file is an error:
one line on stderr, exit code 2. It is not a module: names here start with _ so they can't clobber
the script's config globals (the script takes its config snapshot before exec'ing this file).
"""
import os
import sys
from ast import literal_eval


from util import exit_with_error as _config_error  # one line on stderr, exit code 2


def _checked(key, value, where):
    # the value with the type of the default globals()[key], or an error naming where it came from
    if key not in globals() or key.startswith('_'):
        _config_error(f"{where}: unknown config key '{key}'")
    default = globals()[key]
    if default is None or type(value) is type(default):
        return value
    if type(default) is float and type(value) is int:  # --learning_rate=1 means 1.0
        return float(value)
    _config_error(f"{where}: {key} must be {type(default).__name__} (default {default!r}), "
                  f"got {type(value).__name__} {value!r}")


for _arg in sys.argv[1:]:
    if not _arg.startswith('--'):  # a config file: plain assignments, run with the globals in view
        if not os.path.exists(_arg) and '__file__' in globals():  # config/x.py from any directory: the repo's
            _arg = os.path.join(os.path.dirname(os.path.abspath(__file__)), _arg)
        try:
            with open(_arg) as _f:
                _source = _f.read()
        except OSError as _e:
            _config_error(f"{_arg}: cannot read config file ({_e.strerror})")
        print(f"Overriding config with {_arg}")
        _scope = dict(globals())
        exec(_source, _scope)  # (train.py's `compile` setting shadows the builtin)
        for _key, _value in _scope.items():
            # new or changed primitives are settings; imported modules and helpers are not
            if not _key.startswith('_') and isinstance(_value, (int, float, bool, str)) and \
                    (_key not in globals() or _value is not globals()[_key]):
                globals()[_key] = _checked(_key, _value, _arg)
    else:  # --key=value
        _key, _sep, _text = _arg[2:].partition('=')
        if not _sep and isinstance(globals().get(_key), bool):
            _text = 'True'  # --compile means --compile=True
        elif not _sep:
            _config_error(f"{_arg}: expected --key=value")
        try:
            _value = literal_eval(_text)
        except (SyntaxError, ValueError):
            _value = _text  # a bare word such as --dataset=toy is a string
        if isinstance(globals().get(_key), str) and not isinstance(_value, str):
            _value = _text  # --out_dir=1 or --dataset=None is still a name for a str key
        globals()[_key] = _checked(_key, _value, _arg)
        if not globals().get('_quiet_overrides'):  # a script may set it (bench.py prints its settings itself)
            print(f"Overriding: {_key} = {globals()[_key]!r}")
