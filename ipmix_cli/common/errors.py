"""The one exception type for errors a user can cause; the CLI prints it as one line."""

from string import Formatter

from fractalgen.errors import FractalgenError


class IpmixError(FractalgenError):
    """A bad path, option, image or environment: shown as `Error: <message>`, exit code 1."""


class OptionError(IpmixError):
    """An IpmixError about options. The message is a template in which `{name}` stands for the
    option `name` and the other fields are values given as keywords: a library caller reads the
    parameter's name (`extend_epochs`), the CLI its flag (`--extend-epochs`, see `spelled`)."""

    def __init__(self, template: str, **values):
        self.template, self.values = template, values
        super().__init__(self.spelled(lambda name: name))

    def spelled(self, spell) -> str:
        """The message with every option written as `spell(name)`."""
        options = {name: spell(name) for _, name, _, _ in Formatter().parse(self.template)
                   if name and name not in self.values}
        return self.template.format(**options, **self.values)

    def __reduce__(self):  # raised in a worker process and re-raised in the parent
        return _rebuild_option_error, (self.template, self.values)


def _rebuild_option_error(template: str, values: dict) -> OptionError:
    return OptionError(template, **values)
